"""The overfitting study's command: every variant builds a valid config that differs from the
baseline in its own keys only, each with the study's 3 seeds."""


from convjax.config import apply_overrides, config_diff
from experiments import ablate, overfitting_study
from experiments.cifar10_cnn import config


def test_every_variant_changes_only_its_own_keys_for_three_seeds(tmp_path):
    base = apply_overrides(config(), list(overfitting_study.SHARED))
    argv = overfitting_study.ablate_argv([])
    variants = [ablate.parse_variant(v) for f, v in zip(argv, argv[1:]) if f == "--variant"]
    assert variants == [(n, list(o)) for n, o in overfitting_study.VARIANTS.items()]
    runs = ablate.plan_runs(base, variants,
                            ablate.parse_seeds(overfitting_study.SEEDS), tmp_path)
    assert len(runs) == 3 * len(variants) == 36
    baseline = {run.seed: run.cfg for run in runs if run.variant == "baseline"}
    for run in runs:
        changed = {d.split(":")[0] for d in config_diff(baseline[run.seed], run.cfg)}
        assert changed == {o.split("=")[0] for o in run.overrides}, run.variant
    assert base.data.train_limit == 4000 and base.train.epochs == 20


def test_the_command_passes_the_users_arguments_last(capsys):
    overfitting_study.main(["--workdir", "w", "--list", "--set", "train.epochs=2"])
    printed = capsys.readouterr().out
    assert printed.startswith("python -m experiments.ablate --experiment cifar10_cnn")
    assert printed.rstrip().endswith("--workdir w --set train.epochs=2")
    assert printed.count("--variant") == 12 and "batch512:train.batch_size=512" in printed
