"""Two-process training of a cxrgen stage for the DDP tests: `launch` starts this file under a launcher (torchrun,
accelerate launch); run as a script, it trains the stage and writes what each rank ended with to rank<N>.json."""

import json
import os
import subprocess
import sys
from pathlib import Path

TORCHRUN = ["torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


def launch(launcher, stage, config, annotation, images, output, workdir, trainer_args=(), path=None):
    """Train ``stage`` in two processes under ``launcher`` (module and arguments for ``python -m``); ``config`` is a
    YAML path or a dict; ``path`` replaces PATH (e.g. a folder without java, so METEOR is skipped). Returns the
    records of ranks 0 and 1."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PYTHON", "HF_", "TRANSFORMERS_"))}
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", HF_HOME=str(Path(workdir) / "hf_home"))
    if path is not None:
        env["PATH"] = str(path)
    command = [
        sys.executable,
        "-m",
        *launcher,
        __file__,
        stage,
        json.dumps(config if isinstance(config, dict) else str(config)),
        str(annotation),
        str(images),
        str(output),
        json.dumps(list(trainer_args)),
    ]
    completed = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-4000:]
    return [json.loads((Path(output) / f"rank{rank}.json").read_text()) for rank in (0, 1)]


def _train(stage, config, data, images, output, trainer_args):
    import hashlib
    import importlib

    import torch

    from cxrgen.trainers.stage_config import STAGES

    torch.set_num_threads(1)
    module = importlib.import_module(STAGES[stage])
    trainer, checkpoint, _ = module.build_trainer(config, data, images, output, trainer_args=trainer_args)
    trainer.train(resume_from_checkpoint=checkpoint)
    digest = hashlib.sha256()
    for name, tensor in sorted(trainer.model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().contiguous().numpy().tobytes())
    record = {
        "world_size": trainer.args.world_size,
        "rank": trainer.args.process_index,
        "backend": torch.distributed.get_backend() if torch.distributed.is_initialized() else None,
        "ddp": type(trainer.model_wrapped).__name__,
        "sha256": digest.hexdigest(),
        "steps": trainer.state.global_step,
        "evaluated": any("eval_bleu_4" in entry for entry in trainer.state.log_history),
    }
    with open(os.path.join(output, f"rank{record['rank']}.json"), "w") as stream:
        json.dump(record, stream)


if __name__ == "__main__":
    stage, config, data, images, output, arguments = sys.argv[1:7]
    _train(stage, json.loads(config), data, images, output, json.loads(arguments))
