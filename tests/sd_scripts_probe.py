"""Reads rendered kohya_wrap files with sd-scripts' own code and reports what it understood.

Used by tests/test_contract.py; run with the sd-scripts checkout as the working directory:
    python tests/sd_scripts_probe.py CASES.json RESULTS.json

CASES.json is a list of {"id", "script", "train_toml", "dataset_toml", "keys"}. For each case this
does what the training script does before it loads a model: its `__main__` with the argv kohya_wrap
launches it with (`--config_file train.toml --dataset_config dataset.toml`) up to
`read_config_from_file`, then `verify_training_args`, `prepare_dataset_args`, the dataset blueprint
and dataset group (images, captions, buckets), the trainer's `assert_extra_args`, the LoRA module's
`create_network` (with empty stand-in models), `get_optimizer` (on one dummy parameter) and
`load_prompts` on `sample_prompts`. Every stage reports its values or its error separately, so one
failure does not hide the others.

Values are written type-tagged (`[type name, value]`, containers recursively), because JSON alone
cannot tell a tuple from a list, and the tests assert exact types.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import importlib
import io
import json
import os
import sys
import traceback
from collections.abc import Callable
from typing import Any

# Run as a file, Python puts tests/ first on sys.path; sd-scripts imports its modules from the cwd.
sys.path.insert(0, os.getcwd())

import torch  # noqa: E402
from library import config_util, train_util  # noqa: E402

TRAINERS = {
    "train_network.py": ("train_network", "NetworkTrainer"),
    "sdxl_train_network.py": ("sdxl_train_network", "SdxlNetworkTrainer"),
    "flux_train_network.py": ("flux_train_network", "FluxNetworkTrainer"),
}


def tagged(value: Any) -> Any:
    """A JSON form of `value` that keeps its Python type."""
    if value is None:
        return None
    if isinstance(value, bool | int | float | str):
        return [type(value).__name__, value]
    if isinstance(value, list | tuple):
        return [type(value).__name__, [tagged(v) for v in value]]
    if isinstance(value, dict):
        return ["dict", {str(k): tagged(v) for k, v in value.items()}]
    if isinstance(value, os.PathLike):  # argparse's type=Path options given on the command line
        return ["Path", os.fspath(value)]
    return [type(value).__name__, repr(value)]


def stage(results: dict[str, Any], name: str, run: Callable[[], Any]) -> Any:
    """Run one stage; store its value (tagged by the stage itself) or its error under `name`."""
    printed = io.StringIO()
    try:
        with contextlib.redirect_stderr(printed):  # argparse says why it exits only on stderr
            value = run()
    except (Exception, SystemExit) as exc:  # sd-scripts also calls exit() on bad input
        last = traceback.format_exception(exc)[-3:]
        results[name] = {
            "error": f"{type(exc).__name__}: {exc}",
            "where": printed.getvalue()[-2000:] + "".join(last),
        }
        return None
    results[name] = {"value": value}
    return value


def read_args(case: dict[str, Any]) -> argparse.Namespace:
    """The script's `__main__`, up to `trainer.train(args)`, with the argv kohya_wrap launches it with."""
    module = importlib.import_module(TRAINERS[case["script"]][0])
    # read_config_from_file parses sys.argv a second time, over the TOML values, so argv must be the real one.
    sys.argv = [case["script"], "--config_file", case["train_toml"], "--dataset_config", case["dataset_toml"]]
    parser = module.setup_parser()
    args = parser.parse_args()
    train_util.verify_command_line_training_args(args)
    return train_util.read_config_from_file(args, parser)


def prepared(args: argparse.Namespace) -> argparse.Namespace:
    """The namespace as `NetworkTrainer.train` has it when it builds the dataset."""
    args = copy.deepcopy(args)
    train_util.verify_training_args(args)
    train_util.prepare_dataset_args(args, True)
    return args


def dataset_config(case: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    # As train_network.py's NetworkTrainer.train constructs it.
    sanitizer = config_util.ConfigSanitizer(True, True, args.masked_loss, True)
    user_config = config_util.load_user_config(case["dataset_toml"])
    blueprint = config_util.BlueprintGenerator(sanitizer).generate(user_config, args)
    return {
        "loaded": tagged(user_config),
        "sanitized": tagged(sanitizer.sanitize_user_config(user_config)),
        "blueprint": blueprint,
    }


def dataset_group(blueprint: Any) -> tuple[Any, Any]:
    return config_util.generate_dataset_group_by_blueprint(blueprint.dataset_group)


def describe_group(group: Any) -> dict[str, Any]:
    images = {}
    buckets = []
    for dataset in group.datasets:
        for info in dataset.image_data.values():
            images[info.absolute_path] = tagged(
                {"caption": info.caption, "num_repeats": info.num_repeats, "is_reg": info.is_reg}
            )
        manager = dataset.bucket_manager
        buckets += [[list(manager.resos[i]), len(keys)] for i, keys in enumerate(manager.buckets) if keys]
    return {
        "batches": len(group),
        "num_train_images": group.num_train_images,
        "num_reg_images": group.num_reg_images,
        "images": images,
        "buckets": sorted(buckets),
    }


def trainer_checks(case: dict[str, Any], args: argparse.Namespace, groups: tuple[Any, Any]) -> None:
    module_name, class_name = TRAINERS[case["script"]]
    trainer = getattr(importlib.import_module(module_name), class_name)()
    trainer.assert_extra_args(copy.deepcopy(args), *groups)


def network_kwargs(args: argparse.Namespace) -> dict[str, str]:
    # train_network.py splits each network_args entry at its first "=" into create_network's kwargs.
    return dict(arg.split("=", 1) for arg in args.network_args or [])


def create_network(case: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """What the LoRA module makes of the network options, with empty stand-ins for the models."""
    kwargs = network_kwargs(args)
    empty = torch.nn.Module
    if case["script"] == "flux_train_network.py":
        from networks import lora_flux

        net = lora_flux.create_network(
            1.0,
            args.network_dim,
            args.network_alpha,
            None,
            [empty(), empty()],
            empty(),
            neuron_dropout=args.network_dropout,
            **kwargs,
        )
        return tagged(
            {
                "dim": net.lora_dim,
                "alpha": net.alpha,
                "conv_dim": net.conv_lora_dim,
                "conv_alpha": net.conv_alpha,
            }
        )

    from library.sdxl_original_unet import SdxlUNet2DConditionModel
    from networks import lora

    is_sdxl = case["script"] == "sdxl_train_network.py"

    class EmptySdxlUNet(SdxlUNet2DConditionModel):  # lora.create_network tells SDXL by the U-Net's class
        def __init__(self) -> None:
            torch.nn.Module.__init__(self)

    text_encoders = [empty(), empty()] if is_sdxl else [empty()]
    unet = EmptySdxlUNet() if is_sdxl else empty()
    net = lora.create_network(
        1.0,
        args.network_dim,
        args.network_alpha,
        None,
        text_encoders,
        unet,
        neuron_dropout=args.network_dropout,
        **kwargs,
    )
    result: dict[str, Any] = {
        "dim": net.lora_dim,
        "alpha": net.alpha,
        "conv_dim": net.conv_lora_dim,
        "conv_alpha": net.conv_alpha,
        "block_lr_weight": getattr(net, "block_lr_weight", None),
    }
    if "block_dims" in kwargs:
        # create_network passes these to LoRANetwork without keeping them; ask the same helper it uses.
        dims, alphas, conv_dims, conv_alphas = lora.get_block_dims_and_alphas(
            is_sdxl,
            kwargs.get("block_dims"),
            kwargs.get("block_alphas"),
            net.lora_dim,
            net.alpha,
            kwargs.get("conv_block_dims"),
            kwargs.get("conv_block_alphas"),
            net.conv_lora_dim,
            net.conv_alpha,
        )
        result |= {
            "block_dims": dims,
            "block_alphas": alphas,
            "conv_block_dims": conv_dims,
            "conv_block_alphas": conv_alphas,
        }
    return tagged(result)


def optimizer(args: argparse.Namespace) -> dict[str, Any]:
    args = copy.deepcopy(args)
    param = torch.nn.Parameter(torch.zeros(4))
    name, arg_text, opt = train_util.get_optimizer(args, [param])
    return tagged(
        {
            "name": name,
            "class": type(opt).__name__,
            "defaults": dict(opt.defaults),
            "lr_scheduler": args.lr_scheduler,
        }
    )


def probe(case: dict[str, Any]) -> dict[str, Any]:
    results: dict[str, Any] = {}
    args = stage(results, "read_args", lambda: read_args(case))
    if args is None:
        return results
    results["read_args"]["value"] = {key: tagged(getattr(args, key, "<absent>")) for key in case["keys"]}
    ready = stage(results, "prepare_args", lambda: prepared(args))
    if ready is not None:
        results["prepare_args"]["value"] = None
        config = stage(results, "dataset_config", lambda: dataset_config(case, ready))
        if config is not None:
            blueprint = config.pop("blueprint")
            config["blueprint"] = tagged(
                {
                    "datasets": [
                        {
                            "params": dataclasses.asdict(d.params),
                            "subsets": [dataclasses.asdict(s.params) for s in d.subsets],
                        }
                        for d in blueprint.dataset_group.datasets
                    ],
                }
            )
            groups = stage(results, "dataset_group", lambda: dataset_group(blueprint))
            if groups is not None:
                results["dataset_group"]["value"] = describe_group(groups[0])
                stage(results, "assert_extra_args", lambda: trainer_checks(case, ready, groups))
    stage(results, "create_network", lambda: create_network(case, args))
    stage(results, "get_optimizer", lambda: optimizer(args))
    if getattr(args, "sample_prompts", None) is not None:
        stage(results, "load_prompts", lambda: tagged(train_util.load_prompts(args.sample_prompts)))
    return results


def main() -> None:
    cases_path, results_path = sys.argv[1:3]
    with open(cases_path, encoding="utf-8") as f:
        cases = json.load(f)
    results = {case["id"]: probe(case) for case in cases}
    with open(results_path, "w", encoding="utf-8") as f:
        json.dump(results, f, ensure_ascii=False, indent=1)


if __name__ == "__main__":
    main()
