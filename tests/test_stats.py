from ftorch.stats import summary


def test_summary_of_samples():
    s = summary([0.3, 0.1, 0.2] + [0.05] * 97)
    assert s["samples"] == 100 and s["p50"] == 0.05 and s["max"] == 0.3
    assert s["p99"] == 0.2  # nearest rank: index round(0.99 * 99) = 98 of the sorted list


def test_summary_of_nothing():
    assert summary([]) == {"samples": 0, "p50": None, "p99": None, "max": None}
