"""Every ``lightpref …`` command in the README, docs/ and the configs' headers runs, so no example can rot.

``fit``/``validate``/``test`` commands are parsed and instantiated in-process (model, data, loss and trainer are
built; the weights load only when training starts), ``losses`` runs, ``export`` exports a checkpoint of a tiny run,
and ``build-dataset`` parses its options. A path under ``runs/`` that a fresh clone does not have yet stands for a
file an earlier command writes, and is replaced by that file from a tiny run.
"""

import importlib.util
import re
import shlex
import shutil
from pathlib import Path

import pytest
import yaml

from lightpref.cli import build_cli, main
from lightpref.commands import build_dataset_options as build_dataset
from lightpref.losses import registered_names

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md")), *sorted(REPO.glob("plugins/*/README.md"))]
CONFIGS = sorted((REPO / "configs").glob("*.yaml"))
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
COMMAND = re.compile(r"(?:^|&&|\bsrun|(?<!\S)-m)\s*lightpref(\.evaluation\.build_dataset)?\s+(.*)$")


def commands_in(text: str) -> list[list[str]]:
    """The argument lists of the ``lightpref`` commands in ``text``'s code blocks (comments dropped)."""
    found = []
    for block in FENCE.findall(text):
        for line in block.splitlines():
            line = line.split(" #")[0].strip()
            match = COMMAND.search(line)
            if match and not line.startswith("#"):
                arguments = shlex.split(match.group(2))
                found.append(["build-dataset", *arguments] if match.group(1) else arguments)
    return found


def header_commands(config: Path) -> list[list[str]]:
    """The commands a config's header comment gives (``# Run: lightpref …`` and indented ``#   lightpref …``)."""
    found = []
    for line in config.read_text().splitlines():
        if not line.startswith("#"):
            break
        match = re.search(r"lightpref\s+(\S.*)$", line.lstrip("# "))
        if match and line.lstrip("# ").startswith(("Run: lightpref", "lightpref")):
            found.append(shlex.split(match.group(1)))
    return found


EXAMPLES = [(path, arguments) for path in DOCS for arguments in commands_in(path.read_text())]
EXAMPLES += [(path, arguments) for path in CONFIGS for arguments in header_commands(path)]


def test_the_docs_give_the_commands_this_test_relies_on():
    """A change to the extraction that found nothing would make every other test here pass vacuously."""
    flat = [" ".join(arguments) for _, arguments in EXAMPLES]
    assert "fit --config configs/quickstart.yaml --model.loss.init_args.beta 0.2" in flat
    assert "losses" in flat and any(line.startswith("export ") for line in flat)
    assert sum(arguments[0] == "fit" for _, arguments in EXAMPLES) >= 10


@pytest.fixture(scope="module")
def short_run(tiny_checkpoint, pairs_file, tmp_path_factory) -> Path:
    """The log directory of a two-step run: its config.yaml and checkpoints/last.ckpt stand for a run's outputs."""
    root = tmp_path_factory.mktemp("short-run")
    config = root / "job.yaml"
    config.write_text(yaml.safe_dump({
        "trainer": {"max_steps": 2, "accelerator": "cpu", "default_root_dir": str(root), "enable_progress_bar": False,
                    "enable_model_summary": False},
        "model": {"pretrained": str(tiny_checkpoint), "export_dir": None},
        "data": {"train_files": str(pairs_file), "batch_size": 4, "max_length": 64, "max_prompt_length": 32},
    }))
    return Path(build_cli(["fit", "--config", str(config)]).trainer.log_dir)


@pytest.fixture(scope="module")
def reward_export(tiny_checkpoint, tmp_path_factory) -> Path:
    """A reward model exported as `lightpref reward fit` exports one (the tiny model with a new score head)."""
    from lightpref.models.pretrained import ModelSource, load_tokenizer
    from lightpref.reward.export import save_reward_model
    from lightpref.reward.model import load_reward_model

    directory = tmp_path_factory.mktemp("reward-export") / "huggingface"
    source = ModelSource(str(tiny_checkpoint))
    save_reward_model(load_reward_model(source), directory, load_tokenizer(str(tiny_checkpoint)), source)
    return directory


def substitute(arguments: list[str], short_run: Path, tmp_path: Path, reward_export: Path | None = None) -> list[str]:
    """Outputs go to ``tmp_path``; a ``runs/…`` input a fresh clone lacks becomes the short run's file (a reward
    model's export directory: ``reward_export``)."""
    result = []
    for argument in arguments:
        if argument.startswith("runs/") and argument.endswith("/huggingface") and reward_export is not None:
            argument = str(reward_export)
        elif argument.startswith("runs/") and not (REPO / argument).exists():
            argument = str(short_run / "checkpoints" / "last.ckpt" if argument.endswith(".ckpt")
                           else short_run / "config.yaml")
        result.append(argument)
    return result


def run_trainer_command(arguments: list[str], tmp_path: Path) -> None:
    """Parse and instantiate; a saved run config (it records `ckpt_path`, a `fit` option) and `--help` are parsed
    by the `fit` command's own parser, which `--print_config` stops before it trains."""
    if any(argument in ("--print_config", "--help") or argument.endswith(".help") for argument in arguments):
        with pytest.raises(SystemExit) as done:
            build_cli(arguments)
        assert done.value.code in (None, 0)
        return
    if any("lightning_logs" in argument for argument in arguments):
        run_trainer_command([*arguments, "--print_config"], tmp_path)
        return
    if "--ckpt_path" in arguments:  # used when training starts; the rest is what instantiating checks
        at = arguments.index("--ckpt_path")
        arguments = arguments[:at] + arguments[at + 2:]
    cli = build_cli([*arguments, "--trainer.default_root_dir", str(tmp_path)], run=False)
    assert cli.model.loss is not None and cli.datamodule is not None and cli.trainer is not None


@pytest.mark.parametrize(("source", "arguments"), EXAMPLES,
                         ids=[f"{path.name}:{' '.join(arguments)[:60]}" for path, arguments in EXAMPLES])
def test_documented_command_runs(source, arguments, short_run, tmp_path, monkeypatch, capsys, request):
    """Each documented command, shortened; one that names a loss lightpref lacks gets the example plugin."""
    monkeypatch.chdir(REPO)

    def missing() -> list[str]:
        return [name for name in re.findall(r"--model\.loss\s+(\w+)", " ".join(arguments))
                if name not in registered_names() and name.lower() == name]

    if missing():
        monkeypatch.syspath_prepend(str(request.getfixturevalue("plugin_site")))
        if missing():
            pytest.fail(f"the example needs the loss {missing()[0]!r}, which neither lightpref nor its plugin has")
    named_reward_model = any(a.startswith("runs/") and a.endswith("/huggingface") for a in arguments)
    reward_export = request.getfixturevalue("reward_export") if named_reward_model else None
    arguments = substitute(arguments, short_run, tmp_path, reward_export)
    command = arguments[0]
    if command in ("fit", "validate", "test"):
        run_trainer_command(arguments, tmp_path)
    elif command == "losses":
        assert main(arguments) == 0 and "dpo" in capsys.readouterr().out
    elif command == "export":
        positional = [argument for argument in arguments[1:] if not argument.startswith("--")]
        flags = [argument for argument in arguments[1:] if argument.startswith("--")]
        output = tmp_path / positional[1]
        assert main(["export", positional[0], str(output), *flags]) == 0
        assert (output / "config.json").is_file() or (output / "adapter_config.json").is_file()
    elif command == "build-dataset":
        if "--help" in arguments:
            with pytest.raises(SystemExit):
                build_dataset.parse_args(arguments[1:])
        else:
            assert build_dataset.parse_args(arguments[1:]).output is not None
    elif command == "iterate":  # parsed and its `iterate` section built; the rounds are tests/iterate's
        from lightpref.iterate.command import parse_config
        from lightpref.iterate.workflow import instantiate

        config = parse_config(arguments[1:])
        assert instantiate("iterate", config.iterate).rounds >= 1
    elif command == "reward":
        run_reward_command(arguments[1:], tmp_path, capsys)
    else:
        pytest.fail(f"{source.name} documents `lightpref {' '.join(arguments)}`, which is not a lightpref command")


def run_reward_command(arguments: list[str], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """`lightpref reward fit|validate|test` parsed and instantiated with the reward module; `losses` runs."""
    from lightpref.commands.trainer_cli import build_cli as build_trainer_cli
    from lightpref.reward.module import RewardModule

    if arguments[0] == "losses":
        assert main(["reward", "losses"]) == 0 and "bradley_terry" in capsys.readouterr().out
        return
    assert arguments[0] in ("fit", "validate", "test"), f"an undocumented reward command: {arguments[0]}"
    arguments = list(arguments[1:])
    if "--ckpt_path" in arguments:
        at = arguments.index("--ckpt_path")
        arguments = arguments[:at] + arguments[at + 2:]
    cli = build_trainer_cli([*arguments, "--trainer.default_root_dir", str(tmp_path)], run=False,
                            model_class=RewardModule)
    assert isinstance(cli.model, RewardModule) and cli.datamodule is not None


YAML_FENCE = re.compile(r"^```yaml\n(.*?)^```", re.MULTILINE | re.DOTALL)
WALKTHROUGH = "# Run: lightpref fit --config configs/quickstart.yaml\n"
SNIPPETS = [(path, block) for path in DOCS for block in YAML_FENCE.findall(path.read_text())
            if not block.startswith(WALKTHROUGH)]


def test_the_walked_through_config_is_the_shipped_quickstart():
    readme = (REPO / "README.md").read_text()
    block = next(block for block in YAML_FENCE.findall(readme) if block.startswith(WALKTHROUGH))
    assert yaml.safe_load(block) == yaml.safe_load((REPO / "configs" / "quickstart.yaml").read_text())


@pytest.mark.parametrize(("source", "snippet"), SNIPPETS,
                         ids=[f"{path.name}:{index}" for index, (path, _) in enumerate(SNIPPETS)])
def test_documented_config_snippet_parses_on_top_of_the_quickstart(source, snippet, tmp_path, monkeypatch, request):
    """Each YAML snippet, stacked on the quickstart config; the reader's own files it names (``data/…``) are
    stood in for by lightpref's example pairs, whose rows also have the ``prompt`` field a prompts file needs. A
    snippet that names the example plugin's loss gets the plugin installed (privately) first."""
    for module in re.findall(r"class_path: (\w+)\.", snippet):
        if module == "lightpref_margin_dpo":
            monkeypatch.syspath_prepend(str(request.getfixturevalue("plugin_site")))
        if importlib.util.find_spec(module) is None:
            pytest.fail(f"the snippet needs {module!r}, which is neither lightpref's nor its example plugin")
    if "iterate" in yaml.safe_load(snippet):  # a `lightpref iterate` section: parsed on top of its shipped config
        from lightpref.iterate.command import parse_config

        (tmp_path / "snippet.yaml").write_text(snippet)
        config = parse_config(["--config", str(REPO / "configs" / "iterative_dpo.yaml"),
                               "--config", str(tmp_path / "snippet.yaml")])
        assert config.iterate.reward is not None
        return
    if source.name == "reward_models.md":  # a reward-model snippet: parsed on top of the shipped reward config
        from lightpref.commands.trainer_cli import build_cli as build_trainer_cli
        from lightpref.reward.module import RewardModule

        monkeypatch.chdir(REPO)
        (tmp_path / "snippet.yaml").write_text(snippet)
        cli = build_trainer_cli(["--config", "configs/reward_model.yaml", "--config", str(tmp_path / "snippet.yaml"),
                                 "--trainer.default_root_dir", str(tmp_path)], run=False, model_class=RewardModule)
        assert isinstance(cli.model, RewardModule)
        return
    monkeypatch.chdir(tmp_path)
    for name in set(re.findall(r"\bdata/[\w./*-]+", snippet)):
        path = tmp_path / name.replace("*", "example")  # a pattern stands for the one file that matches it
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / "lightpref" / "examples" / "preferences.jsonl", path)
    quickstart = yaml.safe_load((REPO / "configs" / "quickstart.yaml").read_text())
    quickstart["data"]["train_files"] = str(REPO / quickstart["data"]["train_files"])
    if set(yaml.safe_load(snippet).get("data") or {}) & {"train_files", "hub_dataset", "records", "sources"}:
        del quickstart["data"]["train_files"]  # the snippet gives the training source instead
    (tmp_path / "quickstart.yaml").write_text(yaml.safe_dump(quickstart))
    (tmp_path / "snippet.yaml").write_text(snippet)
    cli = build_cli(["fit", "--config", "quickstart.yaml", "--config", "snippet.yaml",
                     "--trainer.default_root_dir", str(tmp_path)], run=False)
    assert cli.model.loss is not None
