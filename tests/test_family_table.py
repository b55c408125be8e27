"""The cross-family table in docs/results.md is built from the recorded rows, never typed."""
from minigen import results


def row(notebook, metric, value, profile="cpu", baseline=None, unit=""):
    return dict(notebook=notebook, metric=metric, value=value, profile=profile, baseline=baseline,
                baseline_label="", unit=unit, machine="CPU test", date="2026-12-02")


def test_family_table_reads_fd_floor_n_likelihood_and_wall_time():
    rows = [row("02_vae", "FD of samples", 226.06, baseline=14.3),
            row("02_vae", "test NLL bound, IWAE k=100", 90.86, unit="nats"),
            row("02_vae", "wall time, whole notebook", 286.5, unit="s"),
            row("04_diffusion", "FD at the lowest-FD guidance scale (n=500)", 72.6, baseline=37.45),
            row("04_diffusion", "FD at the lowest-FD guidance scale (n=32)", 999.0, profile="ci", baseline=80.0)]
    table = results.family_table(rows)
    lines = table.splitlines()
    vae = next(l for l in lines if l.startswith("| VAE"))
    assert "| cpu | 226.1 | 14.3 | 5000 | 90.86 nats (test NLL bound, IWAE k=100) | 286.5 s |" in vae
    diffusion = [l for l in lines if l.startswith("| diffusion")]
    assert len(diffusion) == 1 and "| 72.6 | 37.45 | 500 |" in diffusion[0]      # n from the name; no ci row
    assert not any(l.startswith("| normalizing flow") for l in lines)             # nothing recorded: no row
    assert "Across the course" in results.render(rows)
