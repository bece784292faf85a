"""The Ray cluster as a sweep sees it: which session to use, what one trial asks for, what the nodes (and the
node types an autoscaler may add) can hold, how many trials may run at once, and a watcher that speaks up when
a trial cannot be placed.

- Without ``--address`` a sweep starts a local Ray session of its own (``address="local"``), never the cluster
  Ray last recorded on the machine. Its dashboard port is chosen here and named in ``RAY_API_SERVER_ADDRESS``
  for every process of the session, and ``RAY_ADDRESS`` names the session for the driver's children, so that
  Ray Train's clean-up (which asks the State API for "the" Ray instance) never confuses two sessions on one
  machine (``shared/reference/ENGINES.md``).
- A request that no node, present or addable, can ever hold is refused before trials start (:func:`preflight`).
- Trials are not capped by the resources present at start: the cap is what the cluster can hold at its
  largest (its nodes plus what the autoscaler may add), so pending trials stay pending and make it grow.
- On a cluster that cannot grow, a placement that waits is reported after ``WARN_S`` (naming the request,
  the trials not started and what is free) and the sweep is stopped after ``PLACEMENT_LIMIT_S``
  (``$BENCHXFER_PLACEMENT_TIMEOUT_S``, default 600 s).
"""

from __future__ import annotations

import _thread
import dataclasses
import logging
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from benchxfer import paths
from benchxfer.errors import BenchxferError
from benchxfer.trialdir import SweepDir

if TYPE_CHECKING:
    from benchxfer.plan.schema import FailurePolicy, Resources
    from benchxfer.recipes import TrainConfig

log = logging.getLogger("benchxfer")

# Ray Train's controller polls its workers every 2 s by default; a short trial waits for the poll that sees it end
HEALTH_CHECK_INTERVAL_S = "0.2"
PLACEMENT_LIMIT_S = 600.0  # unless $BENCHXFER_PLACEMENT_TIMEOUT_S (checked at start-up) says otherwise
WARN_S = 45.0  # or half the limit, when that is less
POLL_S = 5.0
RAY_TOKEN = Path("~/.ray/auth_token")  # Ray's token for clusters with token authentication
BOOTSTRAP_CONFIG = Path("~/ray_bootstrap_config.yaml")  # where `ray up` leaves the autoscaler's config on the head
DRIVER_MEMORY = 256 * 1024**2  # what a TorchTrainer trial's driver reserves (Launch.tune_resources)


# --- what a launch asks for ---------------------------------------------------------------------

@dataclass(frozen=True)
class Launch:
    """How to run a batch of trials: the sweep, where to track, and the resources of one trial."""

    sweep: str
    tracking_uri: str
    workers: int = 1
    cpus_per_worker: float = 1
    gpus_per_worker: float = 0
    max_concurrent: int = 0
    trainer: str = "auto"  # auto: TorchTrainer for DDP, 1-worker trials inside the Tune trial; or torch/direct
    max_retries: int = 2
    record_shards: bool = False
    keep: str = "selected"  # what a final trial's folder keeps (trialdir.KEEP)

    @classmethod
    def of(cls, sweep: str, tracking_uri: str, resources: Resources, failure: FailurePolicy, **rest: Any) -> Launch:
        """The run settings of a sweep's or a pre-training's checked ``resources:`` and ``failure:`` records (whose
        field names are this class's); ``rest``: ``keep``, ``record_shards``."""
        return cls(sweep, tracking_uri, **dataclasses.asdict(resources), max_retries=failure.max_retries, **rest)

    def use_torch_trainer(self) -> bool:
        return self.trainer == "torch" or self.workers > 1

    def tune_resources(self) -> dict[str, float]:
        """What one Tune trial reserves: a 1-worker trial trained inside it, its worker's CPUs and GPUs. A
        TorchTrainer's driver only waits on its TorchTrainer, whose workers hold the CPUs and GPUs; Ray refuses an
        empty request, so the driver reserves the memory it really uses and no CPU."""
        if self.use_torch_trainer():
            return {"cpu": 0, "memory": DRIVER_MEMORY}
        return {"cpu": self.cpus_per_worker, "gpu": self.gpus_per_worker}


# --- the session ----------------------------------------------------------------------------------

def session_env() -> dict[str, str]:
    """What every process of the sweep's Ray job needs in its environment."""
    env = {k: os.environ[k] for k in paths.PINNED if k in os.environ}
    env["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] = os.environ.get("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S",
                                                             HEALTH_CHECK_INTERVAL_S)
    for k in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS"):
        if os.environ.get(k):
            env[k] = os.environ[k]
    return env


def train_worker_env(launch: Launch) -> dict[str, str]:
    """Environment of a TorchTrainer's workers (``RunConfig(worker_runtime_env={"env_vars": ...})``): one
    OpenMP/MKL thread pool the size of the worker's CPUs, instead of one thread per core of the node."""
    threads = str(max(1, int(launch.cpus_per_worker)))
    return {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}


SESSION_ADDRESS: str | None = None  # the $RAY_ADDRESS this process set for its own session's children


def start(address: str | None = None) -> None:
    """Join the cluster at ``address`` (``auto``, ``HOST:PORT`` or ``ray://...``), or start a local session of
    this sweep's own, bound to 127.0.0.1. Idempotent."""
    if address:
        token_auth_env()  # before Ray is first imported in this process, where it is not yet
    import ray

    if ray.is_initialized():
        return
    from benchxfer.tracking import free_port

    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", HEALTH_CHECK_INTERVAL_S)
    # Ray's notice that token authentication is on (its default for a local session) is not the user's concern;
    # its logger is a private module's: the one Ray private name accepted by tests/test_layers.py, pinned there
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    if address:
        os.environ.pop("RAY_API_SERVER_ADDRESS", None)  # the cluster's own dashboard, found through its GCS
        if address not in ("auto",) and "://" not in address:
            os.environ["RAY_ADDRESS"] = address
        try:
            ray.init(address=address, runtime_env={"env_vars": session_env()}, log_to_driver=True)
        except (ConnectionError, ValueError, RuntimeError) as err:
            raise BenchxferError(f"--address {address}: cannot join a Ray cluster there "
                                 f"({str(err).strip().splitlines()[0][:200]})") from None
    else:
        # Our own session: its State API (the dashboard) is named to every process of the session before they
        # start, as Ray Train's clean-up actor would otherwise look for "the" local instance and may find two.
        port = free_port()
        os.environ["RAY_API_SERVER_ADDRESS"] = f"http://127.0.0.1:{port}"
        os.environ.pop("RAY_ADDRESS", None)
        ray.init(address="local", dashboard_host="127.0.0.1", dashboard_port=port,
                 runtime_env={"env_vars": session_env()}, configure_logging=True,
                 logging_level=logging.WARNING)
    global SESSION_ADDRESS
    os.environ["RAY_ADDRESS"] = SESSION_ADDRESS = ray.get_runtime_context().gcs_address  # for the driver's children
    global _watch
    _watch = PlacementWatch()  # one per Ray session of this process
    _watch.start()


def token_auth_env() -> None:
    """`ray start --head` turns token authentication on when a Ray token exists on the machine; a process that
    joins must turn it on for itself, or the cluster refuses it. Ray reads ``RAY_AUTH_MODE`` once, when it is
    imported: the command line sets it here at start-up, before any command imports Ray (and :func:`start`, for a
    program that has not imported Ray yet). Once Ray is imported, setting it would only make this process's
    environment (which the nodes it starts inherit) disagree with what Ray read: a program that imports Ray
    itself sets ``RAY_AUTH_MODE=token`` in its environment first, as Ray's docs say (tests/conftest.py does). A
    mode the user chose is kept."""
    if "ray" in sys.modules or "RAY_AUTH_MODE" in os.environ:
        return
    if os.environ.get("RAY_AUTH_TOKEN") or RAY_TOKEN.expanduser().exists():
        os.environ["RAY_AUTH_MODE"] = "token"


# --- what the cluster can hold -------------------------------------------------------------------

@dataclass(frozen=True)
class Shape:
    """A kind of node: its resources and how many of it the cluster may have at most."""

    name: str
    resources: dict[str, float]
    count: int


def worker_bundle(launch: Launch) -> dict[str, float]:
    b = {"CPU": float(launch.cpus_per_worker), "GPU": float(launch.gpus_per_worker)}
    return {k: v for k, v in b.items() if v}


def fits(bundle: dict[str, float], resources: dict[str, float]) -> int:
    """How many ``bundle`` fit in ``resources``."""
    return min((int(resources.get(k, 0) // v) for k, v in bundle.items() if v), default=1 << 30)


def autoscaler_config() -> dict[str, Any] | None:
    """The autoscaler's cluster config, when this machine runs the autoscaler (the head node): the file that
    `ray up` leaves, else the one named on the command line of the autoscaler's monitor process."""
    candidates = [BOOTSTRAP_CONFIG.expanduser()]
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if any(b"monitor.py" in a for a in args):
            candidates += [Path(a.decode().split("=", 1)[1]) for a in args if a.startswith(b"--autoscaling-config=")]
    for path in candidates[::-1]:
        try:
            doc = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError):
            continue
        if isinstance(doc, dict) and isinstance(doc.get("available_node_types"), dict):
            return doc
    return None


def shapes() -> tuple[list[Shape], bool]:
    """The alive nodes, and the node types the autoscaler may add; and whether the cluster can grow."""
    import ray

    alive = [Shape(n["NodeID"][:8], {k: float(v) for k, v in n["Resources"].items()}, 1)
             for n in ray.nodes() if n.get("Alive")]
    config = autoscaler_config()
    if config is None:
        return alive, False
    head = config.get("head_node_type")
    added = [Shape(name, {k: float(v) for k, v in (t.get("resources") or {}).items()}, int(t.get("max_workers", 0)))
             for name, t in config["available_node_types"].items() if name != head]
    return alive + [s for s in added if s.count > 0], True


def describe(resources: dict[str, float]) -> str:
    keep = {k: v for k, v in resources.items() if k in ("CPU", "GPU") or not (
        k.startswith(("node:", "accelerator_type")) or k in ("memory", "object_store_memory"))}
    return "{" + ", ".join(f"{k}: {v:g}" for k, v in sorted(keep.items())) + "}"


def preflight(launch: Launch, found: list[Shape] | None = None) -> None:
    """Refuse a trial that no node, present or addable, can hold: one worker's bundle must fit one node, and
    a trial's workers must fit in the cluster at its largest."""
    found = shapes()[0] if found is None else found
    bundle = worker_bundle(launch)
    unknown = [s for s in found if not s.resources]  # a node type whose resources the autoscaler detects later
    if unknown or not bundle:
        return
    slots = sum(fits(bundle, s.resources) * s.count for s in found)
    if slots >= launch.workers:
        return
    per_worker = " per worker" if launch.workers > 1 else ""
    nodes = "; ".join(f"{s.name}{f' (up to {s.count})' if s.count > 1 else ''}: {describe(s.resources)}"
                      for s in found)
    raise BenchxferError(f"resources: a trial asks for {launch.workers} x {describe(bundle)}{per_worker}, "
                         f"which no node of the cluster can hold; nodes: {nodes}")


def gpu_types(shape: Shape) -> list[str]:
    """The GPU types Ray says a node (type) has: its ``accelerator_type:NAME`` resources."""
    return [k.split(":", 1)[1] for k in shape.resources if k.startswith("accelerator_type:")]


def gpu_preflight(launch: Launch, configs: list[tuple[TrainConfig, str]], found: list[Shape] | None = None) -> None:
    """Refuse, before any work, a trial whose estimated GPU memory (:mod:`benchxfer.gpu_memory`, per worker
    process) no GPU type of the cluster holds, and a packing of fractional GPUs (``gpus_per_worker`` < 1: that
    many trials on one GPU) whose trials together exceed every GPU type. Judged only where Ray says the type
    (``accelerator_type:NAME`` on the nodes or in the autoscaler's node types) of every GPU node; a node with
    GPUs of an unknown type, or an arch with no measurement, is never refused."""
    from benchxfer import gpu_memory as gm

    if launch.gpus_per_worker <= 0:
        return
    found = shapes()[0] if found is None else found
    gpu_shapes = [s for s in found if s.resources.get("GPU", 0) > 0]
    sizes = {t: gm.gpu_memory(t) for s in gpu_shapes for t in gpu_types(s)}
    if not gpu_shapes or any(not gpu_types(s) or None in (sizes[t] for t in gpu_types(s)) for s in gpu_shapes):
        return
    largest = max(sizes.values())
    share = gm.sharing(launch.gpus_per_worker)
    offered = ", ".join(f"{t} {v:g} GB" for t, v in sorted(sizes.items(), key=lambda kv: kv[1]))
    for cfg, task in configs:  # (knobs, task) of each cell
        images = cfg.images_per_pass(launch.workers)
        est = gm.estimate_for(cfg.arch, cfg.size, images, task)
        if est is None or est.gb * share <= gm.USABLE * largest:
            continue
        what = (f"{cfg.arch} at {cfg.size} px, {images} images per micro-batch, needs an estimated "
                f"{est.gb:.1f} GB per GPU ({est.basis})")
        if share > 1:
            raise BenchxferError(
                f"resources: gpus_per_worker {launch.gpus_per_worker:g} packs {share} trials on one GPU; a trial "
                f"of {what}, so {share} need {est.gb * share:.1f} GB, more than {gm.USABLE:.0%} of any GPU the "
                f"cluster offers ({offered}); give each trial more of a GPU or set micro_batch lower")
        raise BenchxferError(
            f"resources: a trial of {what}, more than {gm.USABLE:.0%} of any GPU the cluster offers ({offered}); "
            "set micro_batch lower (gradients are accumulated: the same step) or use larger GPUs")


def max_trials(launch: Launch, n_trials: int) -> int:
    """How many trials may run at once: ``max_concurrent`` when set, else as many as the cluster holds at its
    largest (present nodes and what the autoscaler may add), never more than ``n_trials``. Trials beyond what
    is free now stay pending (and make an autoscaler add nodes)."""
    found, _ = shapes()
    preflight(launch, found)
    if launch.max_concurrent:
        return max(1, min(launch.max_concurrent, n_trials))
    bundle = worker_bundle(launch)
    if any(not s.resources for s in found) or not bundle:
        return max(1, n_trials)
    slots = sum(fits(bundle, s.resources) * s.count for s in found)
    return max(1, min(n_trials, slots // launch.workers))


# --- the watcher --------------------------------------------------------------------------------

class PlacementWatch(threading.Thread):
    """Watches the session's pending placement groups (Tune trials and Ray Train worker groups). On a cluster
    that cannot grow, one that waits ``WARN_S`` is reported, and one that waits ``PLACEMENT_LIMIT_S`` stops the
    sweep (``SIGINT`` to the driver, which Tune answers by ending the experiment) with :attr:`error` set."""

    def __init__(self, warn_s: float | None = None, limit_s: float | None = None, poll_s: float = POLL_S):
        super().__init__(name="benchxfer-placement-watch", daemon=True)
        if limit_s is None:  # read when the session starts, after the command line's start-up check, not at import
            limit_s = float(os.environ.get("BENCHXFER_PLACEMENT_TIMEOUT_S", PLACEMENT_LIMIT_S))
        warn_s = min(WARN_S, limit_s / 2) if warn_s is None else warn_s
        self.warn_s, self.limit_s, self.poll_s = warn_s, limit_s, poll_s
        self.sweep: str | None = None  # the sweep whose trials are named in the messages (see watch)
        self.error: str | None = None  # why it stopped the sweep
        self.since: dict[str, float] = {}
        self.warned: set[str] = set()
        self.stop_event = threading.Event()

    def run(self) -> None:
        import ray

        while not self.stop_event.wait(self.poll_s):
            if not ray.is_initialized():
                return
            try:
                self.check()
            except Exception as err:  # noqa: BLE001 - a watcher must never take the sweep down by itself
                log.debug("placement watch: %s", err)

    def check(self) -> None:
        from ray.util import placement_group_table

        if self.sweep is None:  # this process runs no trials (yet)
            return
        now = time.monotonic()
        pending = {pid: pg for pid, pg in placement_group_table().items() if pg["state"] in ("PENDING", "RESCHEDULING")}
        self.since = {pid: self.since.get(pid, now) for pid in pending}
        waited = {pid: now - t for pid, t in self.since.items()}
        late = [pid for pid, w in waited.items() if w >= self.warn_s and pid not in self.warned]
        over = [pid for pid, w in waited.items() if w >= self.limit_s]
        if not (late or over) or self.can_grow():  # an autoscaler may still add the node it needs
            return
        import ray

        free = describe(ray.available_resources())
        for pid in late + over[:1]:
            request = describe(_sum_bundles(pending[pid]["bundles"].values()))
            msg = (f"a trial has waited {waited[pid]:.0f} s to be placed: it asks for {request}, the cluster has "
                   f"{free} free and cannot grow; waiting: {_waiting_trials(self.sweep)}")
            if pid in over:
                self.error = (f"{msg}. Stopped after {self.limit_s:.0f} s "
                                    "($BENCHXFER_PLACEMENT_TIMEOUT_S); free the resources or lower `resources:`, "
                                    "then `benchxfer resume`")
                print(f"benchxfer: {self.error}", flush=True)
                self.stop_event.set()
                _thread.interrupt_main()
                return
            self.warned.add(pid)
            print(f"benchxfer: {msg} (the sweep stops after {self.limit_s:.0f} s)", flush=True)

    @staticmethod
    def can_grow() -> bool:
        return shapes()[1]


_watch: PlacementWatch | None = None  # the watcher of this process's Ray session (started by start)


def watch(sweep: str) -> None:
    """Name the trials of ``sweep`` in the watcher's messages (the sweep whose Tune experiment starts now)."""
    if _watch is not None:
        _watch.sweep = sweep


def raise_if_stuck() -> None:
    """After the experiment: the one-line error of a sweep that the watcher stopped."""
    if _watch is not None and _watch.error:
        raise BenchxferError(_watch.error)


def _sum_bundles(bundles) -> dict[str, float]:
    out: dict[str, float] = {}
    for b in bundles:
        for k, v in b.items():
            out[k] = out.get(k, 0) + float(v)
    return out


def _waiting_trials(sweep: str | None, limit: int = 3) -> str:
    """Trials of the running sweep that have not started an epoch yet (no epoch start recorded) and have no result."""
    keys: list[str] = []
    try:
        sdir = SweepDir(sweep) if sweep else None
        listed = [t["trial_key"] for t in (sdir.trials() or [])] if sdir else []
    except BenchxferError:
        listed = []
    for key in listed:
        tdir = sdir.trial(key)
        try:
            if not tdir.epoch_starts() and tdir.result_record() is None:
                keys.append(key)
        except BenchxferError:  # a damaged record: the trial started
            continue
    more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
    return (", ".join(keys[:limit]) + more) if keys else "(none listed yet)"

