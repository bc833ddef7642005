"""`capslab info`: parameter counts through the command line, genotypes and their datasets."""

import json

from typer.testing import CliRunner

from capslab.cli.main import app
from capslab.genotype import DEEPCAPS_GENOTYPE, save_genotype

runner = CliRunner()


def info_json(*args):
    res = runner.invoke(app, ["info", *args, "--json"])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def test_capsnet_parameter_counts_per_layer_and_total():
    out = info_json("--model", "capsnet")
    assert out["parameters"] == 8_215_568
    by_name = {row["name"]: row for row in out["layers"]}
    assert by_name["conv"]["parameters"] == 20_992
    assert by_name["primary"]["output_shape"] == [1152, 8]
    assert by_name["class_caps"]["output_shape"] == [10, 16]
    assert info_json("--model", "capsnet", "--weight-sharing", "--small-decoder")["parameters"] == 6_708_240


def test_genotype_info_picks_the_dataset_of_its_input_and_warns_on_a_mismatch(tmp_path):
    path = tmp_path / "deepcaps.json"
    save_genotype(DEEPCAPS_GENOTYPE, path, format="nascaps")
    out = info_json("--genotype", str(path))
    assert out["dataset"] == "cifar10"  # 3 x 64 (resize 2) -> 3 x 32
    res = runner.invoke(app, ["info", "--genotype", str(path), "--dataset", "mnist"])
    assert res.exit_code == 0
    assert "written for 3x32x32 input" in res.output and "mnist's 1x28x28" in res.output


def test_unknown_model_and_option_errors_are_one_line():
    res = runner.invoke(app, ["info", "--model", "nope"])
    assert res.exit_code == 2 and "unknown model 'nope'" in res.output
    res = runner.invoke(app, ["info", "--model-opt", "bogus=1"])
    assert res.exit_code == 2 and "bogus" in res.output
