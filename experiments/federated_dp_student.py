"""DP one-shot summaries on MNIST-6k: how the server's student learns from its teachers.

    OMP_NUM_THREADS=1 .venv/bin/python experiments/federated_dp_student.py --seed 1 \
        --student plain mix1.0 mix1.0+ep6000 clean [--teachers 2]

On the cached union of the clients' DP summaries of ``federated_dp_ablation.py`` (built here the
same way when absent), the app's ``server_teachers=K`` teachers (``train_teachers`` with the
config's ``server_noise`` and ``server_epochs``, the seeds of the ablation's ``kdK/noise2.0``) are
trained once and cached beside it (their state dicts, loaded with ``weights_only``); then the
student, the model the server keeps, is trained from them several ways:

- ``plain``: the app's ``train_global`` with the teachers' mean softmax (as ``server_teachers=K``);
- ``mixA``: function matching (Beyer et al., CVPR 2022): each augmented batch is mixed with a
  permutation of itself, ``lam x + (1 - lam) x[perm]`` with ``lam ~ Beta(A, A)`` per image, after
  DSA and before the server's noise, and the teachers label the mixed images;
- ``epN``: the student trains ``N`` epochs (the teachers keep ``server_epochs``);
- ``TN``: Hinton's temperature: the student's logits divided by ``N`` are fitted to the mean of the
  teachers' softmaxes at temperature ``N``, the loss's gradient scaled by ``N^2`` (its argmax is the
  student's own);
- ``clean``: the teachers label the batch before the server's noise is added (the student sees it
  with the noise);
- ``decayF``: the app's ``server_noise_decay=F`` for the student (the cached teachers keep theirs);
- specs combine with ``+`` (``mix1.0+ep6000``).

One JSON line per student goes to ``--out`` (accuracy, accuracy per class, the teachers' accuracy
and their ensemble's, seconds).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path

import torch
from federated_dp_ablation import add_cache_args, cache_file, cached_summaries, settings, teacher_record

from fedcl.data import ImageData
from fedcl.distill.augment import DSA, default_strategy
from fedcl.federated.task import TaskSettings, load_data, make_model, mean_softmax, train_global, train_teachers
from fedcl.train import accuracy, class_accuracy, predict, train_model

SERVER = ["server_epochs=2000", "server_noise=2.0"]


def teachers_for(s: TaskSettings, x: torch.Tensor, y: torch.Tensor, data: ImageData, k: int,
                 path: Path) -> list[torch.nn.Module]:
    """The ``k`` teachers of ``server_teachers=k`` on ``(x, y)``, trained once and cached at ``path``."""
    if path.exists():
        states = torch.load(path, weights_only=True)
        nets = []
        for state in states:  # the initialisation is overwritten by the cached weights
            net = make_model(s, data, seed=0)
            net.load_state_dict(state)
            nets.append(net.eval())
        return nets
    nets = train_teachers(dataclasses.replace(s, server_teachers=k), x, y, data, epochs=s.server_epochs,
                          seed=s.seed + 1)
    torch.save([n.state_dict() for n in nets], path)
    return nets


class Tempered(torch.nn.Module):
    """``net``'s logits divided by ``t`` in training, with the gradient reaching them scaled by ``t^2``."""

    def __init__(self, net: torch.nn.Module, t: float) -> None:
        super().__init__()
        self.net, self.t = net, t

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.net(x) / self.t
        return z * self.t ** 2 - (z * (self.t ** 2 - 1)).detach() if self.training else z


def tempered(models: list[torch.nn.Module], t: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """The mean of ``models``' softmaxes at temperature ``t`` (``mean_softmax`` at ``t`` = 1)."""

    def fn(xb: torch.Tensor) -> torch.Tensor:
        return torch.stack([torch.softmax(m(xb) / t, 1) for m in models]).mean(0)

    return fn


def student(s: TaskSettings, x: torch.Tensor, y: torch.Tensor, data: ImageData, nets: list[torch.nn.Module],
            spec: str) -> tuple[float, torch.nn.Module]:
    """Train the server's model from the teachers ``nets`` as ``spec`` says; its test accuracy, and it."""
    mix, epochs, clean, temp = 0.0, s.server_epochs, False, 1.0
    for part in spec.split("+"):
        if part.startswith("mix"):
            mix = float(part[3:])
        elif part.startswith("ep"):
            epochs = int(part[2:])
        elif part.startswith("T"):
            temp = float(part[1:])
        elif part == "clean":
            clean = True
        elif part.startswith("decay"):
            s = dataclasses.replace(s, server_noise_decay=float(part[len("decay"):]))
        elif part != "plain":
            raise SystemExit(f"unknown student spec {part!r}")
    model = make_model(s, data, seed=s.seed)
    seed = s.seed + 1
    teach = tempered(nets, temp) if temp != 1.0 else mean_softmax(nets)
    if temp != 1.0:
        model = Tempered(model, temp)
    if not mix and not clean:  # the app's own path
        return train_global(s, model, x, y, data, epochs=epochs, seed=seed, teacher=teach), model
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    aug = DSA(default_strategy(data.name))
    beta = torch.distributions.Beta(mix, mix) if mix else None
    last: dict[str, torch.Tensor] = {}

    def augment(xb: torch.Tensor) -> torch.Tensor:
        xb = aug.random(xb, gen)
        if beta is not None:
            lam = beta.sample((len(xb),)).view(-1, 1, 1, 1)
            xb = lam * xb + (1 - lam) * xb[torch.randperm(len(xb), generator=gen)]
        last["clean"] = xb
        return xb + s.server_noise * torch.randn(xb.shape, generator=gen)

    def target(xb: torch.Tensor) -> torch.Tensor:
        return teach(last["clean"] if clean else xb)

    train_model(model, x, y, epochs=epochs, lr=s.server_lr, batch_size=256, augment=augment, generator=gen,
                device=s.device, teacher=target)
    return accuracy(model, data.test_images, data.test_labels, device=s.device), model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_cache_args(p)
    p.set_defaults(out=str(Path(__file__).parent / "results" / "federated_dp_student.jsonl"))
    p.add_argument("--student", nargs="*", default=["plain"])
    p.add_argument("--teachers", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(1)
    s = settings(args.seed, args.root, SERVER)
    cache = cache_file(args.cache, args.tag, args.seed)
    blob = cached_summaries(cache, s)
    data = load_data(s.dataset, s.data_root)
    x, y = blob["x"], blob["y"]
    nets = teachers_for(s, x, y, data, args.teachers,
                        cache.with_name(f"{cache.stem}_teachers{args.teachers}.pt"))
    extra = teacher_record(nets, data)
    for spec in args.student:
        t0 = time.perf_counter()
        acc, model = student(s, x, y, data, nets, spec)
        rec = {"tag": args.tag, "seed": s.seed, "student": spec, "k": args.teachers, "accuracy": acc,
               "seconds": round(time.perf_counter() - t0), **extra}
        rec["class_accuracy"] = [round(a, 3) for a in class_accuracy(predict(model, data.test_images),
                                                                      data.test_labels, data.num_classes)]
        print(json.dumps(rec), flush=True)
        with open(args.out, "a") as f:
            f.write(json.dumps(rec) + "\n")


if __name__ == "__main__":
    main()
