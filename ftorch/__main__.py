from ftorch.ops.cli import main

main()
