"""The cross-family table in docs/results.md is built from the recorded rows, never typed."""
from minigen import results


def row(notebook, metric, value, profile="cpu", baseline=None, unit=""):
    return dict(notebook=notebook, metric=metric, value=value, profile=profile, baseline=baseline,
                baseline_label="", unit=unit, machine="CPU test", date="2026-12-02")


def cells(line):
    """A markdown table row's cells, stripped."""
    return [c.strip() for c in line.strip().strip("|").split("|")]


def header():
    return cells(results.family_table([]).splitlines()[0])


def test_family_table_reads_fd_floor_n_likelihood_and_wall_time():
    rows = [row("02_vae", "FD of samples", 226.06, baseline=14.3),
            row("02_vae", "test NLL bound, IWAE k=100", 90.86, unit="nats"),
            row("02_vae", "wall time, whole notebook", 286.5, unit="s"),
            row("04_diffusion", "FD of samples, DDIM-25, lowest-FD guidance scale (n=500)", 72.6, baseline=37.45),
            row("04_diffusion", "FD of samples, DDIM-5 (n=32)", 999.0, profile="ci", baseline=80.0)]
    table = results.family_table(rows)
    lines = table.splitlines()
    vae = next(l for l in lines if l.startswith("| VAE"))
    assert "| cpu | 226.1 | 14.3 | 5000 |" in vae and "| 90.86 nats (test NLL bound, IWAE k=100) |" in vae
    assert "| 286.5 s |" in vae
    diffusion = [l for l in lines if l.startswith("| diffusion")]
    assert len(diffusion) == 1 and "| 72.6 | 37.45 | 500 |" in diffusion[0]      # n from the name; no ci row
    assert not any(l.startswith("| normalizing flow") for l in lines)             # nothing recorded: no row
    assert "Across the course" in results.render(rows)


def test_family_table_prefers_the_n_eval_row_over_a_sweep_at_smaller_n():
    rows = [row("04_diffusion", "FD of samples, DDIM-25, lowest-FD guidance scale (n=500)", 72.6, baseline=37.45),
            row("04_diffusion", "FD of samples, DDIM-25, lowest-FD guidance scale (n=5000)", 30.1, baseline=14.3),
            row("04_diffusion", "FD of samples, DDIM-50, lowest-FD guidance scale (n=10000)", 9.0, baseline=3.7,
                profile="gpu"),
            row("04_diffusion", "FD of samples, DDIM-50, lowest-FD guidance scale (n=500)", 50.0, baseline=37.45,
                profile="gpu")]
    lines = [cells(l) for l in results.family_table(rows).splitlines()[2:]]
    by_profile = {c[1]: dict(zip(header(), c)) for c in lines}
    assert (by_profile["cpu"]["FD"], by_profile["cpu"]["floor"], by_profile["cpu"]["n"]) == ("30.1", "14.3", "5000")
    assert (by_profile["gpu"]["FD"], by_profile["gpu"]["n"]) == ("9", "10000")


def test_family_table_reads_score_precision_recall_training_and_speed_or_leaves_them_blank():
    fd = "FD of samples, DDIM-25, lowest-FD guidance scale (n=5000)"
    rows = [row("04_diffusion", fd, 30.12, baseline=14.3),
            row("04_diffusion", fd.replace("FD", "classifier score", 1), 9.214, baseline=9.7),
            row("04_diffusion", fd.replace("FD", "precision", 1), 0.8061),
            row("04_diffusion", fd.replace("FD", "recall", 1), 0.7404),
            row("04_diffusion", "classifier score of samples, DDIM-25 (n=500)", 1.0),   # another n: not this row's
            row("04_diffusion", "training time, minutes", 2.913, unit="min"),
            row("04_diffusion", "sampling speed, samples/s", 61.27, unit="samples/s"),
            row("02_vae", "FD of samples", 226.06, baseline=14.3),
            row("02_vae", "recall of samples", 0.25)]
    lines = results.family_table(rows).splitlines()
    assert header() == ["family", "profile", "FD", "floor", "n", "classifier score", "precision / recall",
                        "likelihood", "training, min", "samples/s", "notebook wall time", "machine, date"]
    got = {c[0]: dict(zip(header(), c)) for c in map(cells, lines[2:])}
    diffusion = got["diffusion, guided DDIM (04)"]
    assert (diffusion["FD"], diffusion["floor"], diffusion["n"]) == ("30.12", "14.3", "5000")
    assert (diffusion["classifier score"], diffusion["precision / recall"]) == ("9.21", "0.806 / 0.740")
    assert (diffusion["training, min"], diffusion["samples/s"], diffusion["likelihood"]) == ("2.91", "61.3", "")
    vae = got["VAE (02)"]                      # only what 02 recorded: recall; the rest stays blank, never invented
    assert (vae["classifier score"], vae["precision / recall"], vae["training, min"], vae["samples/s"]) == \
        ("", "/ 0.250", "", "")


def test_a_family_may_name_its_own_companion_metrics(monkeypatch):
    own = {"classifier score": "classifier-IS, DiT-fm", "precision": "precision, DiT-fm", "recall": "recall, DiT-fm",
           "training": "training time, DiT-fm, minutes", "speed": "samples per second, DiT-fm"}
    monkeypatch.setattr(results, "FAMILIES", [("latent DiT", "06_x", "FD of samples, DiT-fm", None, own)])
    rows = [row("06_x", "FD of samples, DiT-fm (n=5000)", 57.0, baseline=14.3),
            row("06_x", "classifier-IS, DiT-fm", 9.1), row("06_x", "precision, DiT-fm", 0.9),
            row("06_x", "recall, DiT-fm", 0.8), row("06_x", "training time, DiT-fm, minutes", 1.5),
            row("06_x", "training time, minutes", 99.0),                     # another model's: not read
            row("06_x", "samples per second, DiT-fm", 120.0)]
    got = dict(zip(header(), cells(results.family_table(rows).splitlines()[2])))
    assert (got["FD"], got["classifier score"], got["precision / recall"]) == ("57", "9.1", "0.900 / 0.800")
    assert (got["training, min"], got["samples/s"]) == ("1.5", "120")
