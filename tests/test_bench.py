

def test_recorded_targets_reads_each_verdict_off_the_rows():
    from minigen.bench import recorded_targets

    def row(metric, value, baseline, label="PyTorch SDPA, default backend"):
        return {"metric": metric, "value": value, "baseline": baseline, "baseline_label": label}
    rows = [row("attention fwd DiT-XL/2 256px B32 H16 N256 D72 bfloat16", 110.0, 100.0),
            row("attention fwd+bwd DiT-XL/2 256px B32 H16 N256 D72 bfloat16", 70.0, 100.0),
            row("layernorm_modulate fwd X", 900.0, 400.0, "eager PyTorch (copy 1000 GB/s)")]
    lines = recorded_targets(rows).splitlines()
    assert lines[0].startswith("met") and "1 of 1" in lines[0]
    assert lines[2].startswith("NOT met") and "worst 0.70x" in lines[3]
    assert lines[4].startswith("met") and "0.90x" in lines[5]
    assert recorded_targets([]).count("not measured") == 3
