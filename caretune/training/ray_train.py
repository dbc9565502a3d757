"""`caretune train RECIPE --ray [ADDRESS]`: LLaMA-Factory's own training entry inside Ray Train's TorchTrainer.

Ray Train places `workers` workers (one GPU each on a GPU cluster, one CPU each on a CPU one) and sets up
torch.distributed for each (NCCL on GPUs, gloo on CPUs); every worker then runs `llamafactory-cli train`'s code
(`caretune.lf.train_in_process`) on the recipe, in the directory caretune was started from, so relative paths in
the recipe mean what they mean for the torchrun path (the cluster's nodes share that filesystem). DeepSpeed
recipes keep working: DeepSpeed joins the process group Ray Train made.

This module is also the driver `caretune train --ray` starts in its own process group:

    python -m caretune.training.ray_train SPEC.json
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from urllib.parse import urlparse

from caretune.basics.errors import UserError

PASSED_ENV = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HOME", "LLAMAFACTORY_VERBOSITY", "PYTHONPATH")
CONNECT_TIMEOUT_S = 5.0
LF_CPUS_PER_DEVICE = 10  # LLaMA-Factory 0.9.5's own USE_RAY path asks each device's bundle for 10 CPUs


class RayError(UserError):
    """The Ray cluster cannot run this recipe; the message says why."""


def connect(address: str | None):
    """`ray` connected to the cluster at `address` ("auto": the local one); RayError in one line when Ray is not
    installed or the cluster cannot be reached."""
    try:
        import ray
    except ImportError:
        raise RayError("Ray is not installed: pip install 'caretune[ray]' (ray[train])") from None
    if address and address != "auto":
        from caretune.hub import reachable

        host = address if "://" in address else f"ray://{address}"
        parsed = urlparse(host)
        if not parsed.hostname or not reachable(f"http://{parsed.hostname}:{parsed.port or 6379}", CONNECT_TIMEOUT_S):
            raise RayError(f"Ray cluster {address} is not reachable: start it (ray start --head) or pass its address")
    try:
        ray.init(address=address or "auto", logging_level="ERROR", log_to_driver=False, configure_logging=False)
    except (ConnectionError, RuntimeError, ValueError) as err:
        raise RayError(f"cannot connect to the Ray cluster {address or 'auto'}: {str(err).splitlines()[0]}") from None
    return ray


def cluster_devices(ray, use_gpu: bool) -> int:
    """Devices of the kind workers take: GPUs on a GPU cluster, CPUs on a CPU one (as LLaMA-Factory counts)."""
    return int(ray.cluster_resources().get("GPU" if use_gpu else "CPU", 0))


def check_cluster(address: str | None, workers: int | None, use_gpu: bool) -> int:
    """The number of workers the run gets; RayError in one line when the cluster has too few devices."""
    ray = connect(address)
    try:
        devices = cluster_devices(ray, use_gpu)
    finally:
        ray.shutdown()
    kind = "GPU" if use_gpu else "CPU"
    workers = workers or devices
    if workers < 1 or devices < workers:
        raise RayError(f"the Ray cluster {address or 'auto'} has {devices} {kind}(s); {workers} worker(s) need one each")
    return workers


def check_llamafactory_ray(ray_args: dict, use_gpu: bool) -> None:
    """LLaMA-Factory's own USE_RAY=1 path: its placement group asks each of `ray_num_workers` bundles for 10 CPUs
    (and a GPU on a GPU machine); a cluster without them would wait forever, so refuse in one line."""
    workers = int(ray_args.get("ray_num_workers", 1))
    address = (ray_args.get("ray_init_kwargs") or {}).get("address")
    ray = connect(address)
    try:
        resources = ray.cluster_resources()
    finally:
        ray.shutdown()
    cpus, gpus = int(resources.get("CPU", 0)), int(resources.get("GPU", 0))
    if cpus < LF_CPUS_PER_DEVICE * workers or (use_gpu and gpus < workers):
        raise RayError(
            f"USE_RAY=1: LLaMA-Factory asks the cluster for {workers} bundle(s) of {LF_CPUS_PER_DEVICE} CPUs"
            f"{' and 1 GPU' if use_gpu else ''}; it has {cpus} CPUs and {gpus} GPUs, so it would wait forever. "
            "Use caretune train --ray (Ray Train), or a larger cluster"
        )


def spec(args: dict, workers: int, use_gpu: bool, address: str | None, storage: Path, max_failures: int = 0) -> dict:
    """What the driver needs: the recipe's keys (preflight's overrides applied), the workers, how often they may be
    restarted, and where to run."""
    return {
        "args": args,
        "workers": workers,
        "max_failures": max_failures,
        "use_gpu": use_gpu,
        "address": address,
        "cwd": str(Path.cwd()),
        "storage": str(storage.resolve()),
        "env": {name: os.environ[name] for name in PASSED_ENV if name in os.environ},
    }


def _worker(config: dict) -> None:
    """One Ray Train worker: LLaMA-Factory's training entry on the recipe, from the driver's directory. After a
    restart (a worker died), every worker resumes from the newest complete checkpoint in output_dir; the first
    records each start in the current attempt of the run's manifest."""
    os.chdir(config["cwd"])
    from ray import train

    from caretune.lf import train_in_process
    from caretune.training.manifest import now
    from caretune.training.runs import last_checkpoint, read_manifest, write_status

    args = dict(config["args"])
    output_dir = args.get("output_dir")
    checkpoint = last_checkpoint(Path(output_dir)) if output_dir else None
    if checkpoint is not None:
        args["resume_from_checkpoint"] = str(checkpoint)
    if output_dir and train.get_context().get_world_rank() == 0:  # in this attempt's record (caretune.training.train)
        attempts = read_manifest(output_dir).get("attempts") or [{}]
        starts = [
            *attempts[-1].get("ray_worker_starts", []),
            {"at": now(), "resumed_from": str(checkpoint) if checkpoint else None},
        ]
        attempts[-1].update(ray_worker_starts=starts, ray_restarts=len(starts) - 1)
        write_status(output_dir, attempts=attempts)
    train_in_process(args)


def drive(run: dict) -> None:
    """Run the recipe on the cluster with Ray Train's TorchTrainer (the driver's body)."""
    import ray
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    code_root = str(Path(__file__).resolve().parents[2])  # workers import this checkout's caretune
    env = {**run["env"], "PYTHONPATH": os.pathsep.join(p for p in (code_root, run["env"].get("PYTHONPATH")) if p)}
    ray.init(address=run["address"] or "auto", runtime_env={"env_vars": env}, logging_level="ERROR")
    name = Path(run["args"]["output_dir"]).name if run["args"].get("output_dir") else "caretune"
    trainer = TorchTrainer(
        _worker,
        train_loop_config={"args": run["args"], "cwd": run["cwd"]},
        scaling_config=ScalingConfig(
            num_workers=run["workers"],
            use_gpu=run["use_gpu"],
            resources_per_worker={"GPU": 1} if run["use_gpu"] else {"CPU": 1},
        ),
        run_config=RunConfig(
            name=name, storage_path=run["storage"], failure_config=FailureConfig(max_failures=run.get("max_failures", 0))
        ),
    )
    trainer.fit()


if __name__ == "__main__":
    drive(json.loads(Path(sys.argv[1]).read_text(encoding="utf-8")))
