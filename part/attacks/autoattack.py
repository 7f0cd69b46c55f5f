"""AutoAttack, L-inf, through the upstream `autoattack` package where it is installed, as the paper
used it, else `pyautoattack`. The version is AutoAttack's (AttackSettings.autoattack_version):
standard (APGD-CE, APGD-T, FAB-T, Square) by default, or plus, or rand.

AutoAttack spends no work on examples that are already lost: it skips those the model misclassifies
clean, and each sub-attack attacks only those still robust after the previous ones. We never
pre-filter with our own attacks, since that would change what the `autoattack` figure means; the
caller bounds the work by the number of examples it passes.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from types import ModuleType

import torch
from torch import Tensor, nn

from part.attacks.suite import AttackSettings, EvaluationError
from part.runtime.progress import Task
from part.ui import console

MAX_TARGETS = 9  # the APGD-T / FAB-T target count of the standard and plus versions
MIN_CLASSES = 4  # APGD-T's targeted DLR loss reads the 4th-largest logit

Runner = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]


def _package() -> tuple[ModuleType, bool]:
    """(module, is_upstream)."""
    try:
        import autoattack

        return autoattack, True
    except ImportError:
        pass
    try:
        import pyautoattack

        return pyautoattack, False
    except ImportError:
        raise EvaluationError(
            "the autoattack evaluation needs the pyautoattack package (pip install pyautoattack) "
            "or upstream autoattack; or leave autoattack out of the attacks"
        ) from None


def package_name() -> str:
    """The name and version of the package that runs AutoAttack here, e.g. "pyautoattack 0.2.0"."""
    package, _ = _package()
    version = getattr(package, "__version__", None)
    return f"{package.__name__} {version}" if version else package.__name__


def _runner(model: nn.Module, settings: AttackSettings, device: torch.device,
            num_classes: int) -> tuple[Runner, list[str]]:
    """A function (x, y) -> (x_adv, y_adv) running AutoAttack L-inf in settings'
    autoattack_version, and the sub-attacks it runs."""
    package, upstream = _package()
    options = {"norm": "Linf", "eps": settings.eps, "version": settings.autoattack_version,
               "device": device, "seed": settings.seed}
    if upstream:  # positional-or-keyword API; prints unless verbose=False
        adversary = package.AutoAttack(model, verbose=False, **options)

        def run(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
            return adversary.run_standard_evaluation(x, y, bs=settings.batch_size,
                                                     return_labels=True)
    else:  # keyword-only API; logs to the 'auto-attack' logger, returns (x_adv, y_adv)
        adversary = package.AutoAttack(model, **options)

        def run(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
            return adversary.run_standard_evaluation(x, y, batch_size=settings.batch_size)
    # The targeted attacks take the 9 most likely wrong classes: fewer where fewer exist.
    adversary.apgd_targeted.n_target_classes = min(MAX_TARGETS, num_classes - 1)
    adversary.fab.n_target_classes = min(MAX_TARGETS, num_classes - 1)
    return run, list(adversary.attacks_to_run)


class _LogBridge(logging.Handler):
    """pyautoattack logs its progress at DEBUG on the 'auto-attack' logger: move the progress bar
    on it, and pass its warnings (randomised model, too many targets, ...) on to the console."""

    def __init__(self, task: Task):
        super().__init__(level=logging.DEBUG)
        self._task = task

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if record.levelno >= logging.WARNING:
            console.print(f"[yellow]autoattack warning:[/] {message}", soft_wrap=True)
        elif message.startswith("running "):
            self._task.update(description=f"autoattack ({message.removeprefix('running ')})")
        elif message.startswith("robust accuracy after "):
            self._task.advance(1)


@contextlib.contextmanager
def _bridged_log(task: Task) -> Iterator[None]:
    logger = logging.getLogger("auto-attack")
    saved = logger.level, logger.propagate
    handler = _LogBridge(task)
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False  # its DEBUG chatter must not reach the user's root handlers
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]


def run_autoattack(model: nn.Module, x: Tensor, labels: Tensor, settings: AttackSettings,
                   num_classes: int, task: Task) -> tuple[Tensor, Tensor, str]:
    """AutoAttack on exactly these examples (float images in [0, 1]): its adversarial examples,
    its own verdict (bool [n], the labels it returned == the true ones) and the name and
    version of the package that ran it. `task` advances once per sub-attack."""
    if num_classes < MIN_CLASSES:
        raise EvaluationError(
            f"AutoAttack's targeted attacks need at least {MIN_CLASSES} classes, the model has "
            f"{num_classes}; leave autoattack out of the attacks"
        )
    run, subattacks = _runner(model, settings, labels.device, num_classes)
    task.update(total=len(subattacks))
    with _bridged_log(task):
        x_adv, y_adv = run(x, labels)
    return x_adv, y_adv.to(labels.device) == labels, package_name()


def warn_if_disagreeing(ours: float, reported: float) -> None:
    if ours != reported:
        console.print(
            f"[yellow]autoattack warning:[/] the model's accuracy on AutoAttack's x_adv "
            f"({ours:.2%}) differs from AutoAttack's own report ({reported:.2%}); the model's "
            "outputs are not deterministic (non-deterministic kernels or a randomised model)",
            soft_wrap=True)
