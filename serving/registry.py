"""The models of a serving root, kept in sync with the disk (TF Serving's manager).

:class:`ModelRegistry` polls the root (models.config and directory listings,
:mod:`serving.source`) every ``poll_interval`` seconds, loads new versions on
background threads, and swaps the set of served versions atomically. A request
holds a reference to the :class:`~serving.servable.Servable` it resolved, so
unloading a version never breaks a request already running on it. A version
that fails to load is reported in the model status (state ``END`` with its
error) and is skipped by the version policy, so the previous version keeps
serving; it is retried when its files change.

Robustness, as TF Serving's manager and file-system source:

- a failed listing (``EMFILE``, ``EIO``, a missing model directory) is not "no
  versions": the model keeps what it serves, the error is logged once and counted
  (``:tfx_servables:serving_root_scan_errors``);
- rollouts preserve availability (``AvailabilityPreservingPolicy``): a served version
  that is no longer wanted stays served until a wanted one is AVAILABLE, even if its
  directory is already gone;
- a version with an entry resolving outside the root is refused
  (:mod:`serving.containment`), and status messages carry no server paths.
"""

from __future__ import annotations

import gc
import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import serving.source as disk
from serving import containment, events
from serving.servable import Servable
from serving.source import discover_models, files_stamp, read_config, scan_versions
from tfserving import model_config
from tfserving.model_config import ConfigError, ModelConfig
from tfserving.status import CODE_NAMES, ServingError, echo, invalid_argument, not_found

log = logging.getLogger("serving")

# Longest load error kept in a version's status.
_MAX_LOAD_ERROR = 2000


@dataclass
class VersionStatus:
    """A version's state as GetModelStatus reports it."""

    state: str = "START"
    error_code: str = "OK"
    error_message: str = ""

    def to_json(self, version: int) -> dict[str, Any]:
        """One ``model_version_status`` entry."""
        return {"version": str(version), "state": self.state,
                "status": {"error_code": self.error_code, "error_message": self.error_message}}


class _Model:
    def __init__(self, config: ModelConfig):
        self.config = config
        self.on_disk: dict[int, str] = {}
        self.status: dict[int, VersionStatus] = {}
        self.loaded: dict[int, Any] = {}
        self.loading: set[int] = set()
        self.failed: dict[int, tuple] = {}
        # Replaced, never mutated: readers use whatever dict they picked up.
        self.serving: dict[int, Any] = {}


Loader = Callable[[str, int, str], Any]


class ModelRegistry:
    """The models of a serving root, kept in sync with the disk by a polling thread."""

    def __init__(self, serving_root: str, *, poll_interval: float = 0.5, load_threads: int = 2,
                 loader: Loader = Servable, allow_outside_root: bool = False):
        # A local root resolved (realpath), a bucket URI as given (serving/source.py).
        self.root = disk.resolve_root(serving_root)
        # --allow-symlinks-outside-root: versions may have entries resolving elsewhere.
        self.allow_outside_root = allow_outside_root
        self._scan_errors: dict[str, str] = {}  # what failed -> its error, logged once
        self.poll_interval = poll_interval
        self._loader = loader
        self._lock = threading.RLock()
        self._poll_lock = threading.Lock()  # one scan at a time
        self._idle = threading.Condition(self._lock)
        self._models: dict[str, _Model] = {}
        self._pool = ThreadPoolExecutor(load_threads, thread_name_prefix="serving-load")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._config_stamp: tuple | None = None
        self._configs: list[ModelConfig] | None = None
        # A config from HandleReloadConfigRequest, served until models.config changes.
        self._reloaded: list[ModelConfig] | None = None
        self._reloaded_stamp: tuple | None = None
        self._in_flight_loads = 0
        self._unloaded = False

    # -- lifecycle

    def start(self, wait: bool = True, timeout: float | None = None) -> None:
        """Scans the root, loads the initial versions and starts polling.

        Raises ``FileNotFoundError`` if the root is missing and
        :class:`ConfigError` if ``models.config`` is invalid.
        """
        if not disk.is_directory(self.root):
            raise FileNotFoundError(f"serving root {self.root} does not exist")
        self.poll(strict=True)
        if wait:
            self.wait_idle(timeout)
        self._thread = threading.Thread(target=self._run, name="serving-poll", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stops polling and loading."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Waits until no load is running; False on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: self._in_flight_loads == 0, timeout)

    def _run(self) -> None:
        while not self._stop.wait(self.poll_interval):
            try:
                self.poll()
            except Exception:  # noqa: BLE001 - the watcher must survive anything
                log.exception("polling %s failed", self.root)

    # -- scanning

    def _config_file_stamp(self) -> tuple | None:
        try:
            return disk.config_stamp(self.root)
        except OSError:
            return None

    def _current_configs(self, strict: bool) -> list[ModelConfig]:
        if self._reloaded is not None:
            if self._config_file_stamp() == self._reloaded_stamp:
                return list(self._reloaded)
            log.info("%s changed: serving it instead of the reloaded config",
                     model_config.CONFIG_FILE)
            self._reloaded = None
            self._config_stamp = None  # read it again
        try:
            stamp = disk.config_stamp(self.root)
        except FileNotFoundError:
            if self._configs is not None:
                log.info("%s removed: serving every model directory", model_config.CONFIG_FILE)
            self._config_stamp = None
            self._configs = None
            try:
                configs = discover_models(self.root)
            except OSError as err:  # ScanError, or a bucket's listing error
                if strict:
                    raise
                self._scan_failed("", err)
                with self._lock:  # keep the models being served
                    return [m.config for m in self._models.values()]
            self._scan_ok("")
            return configs
        except OSError as err:
            if strict:
                raise
            self._scan_failed("", err)
            with self._lock:
                return [m.config for m in self._models.values()]
        if stamp != self._config_stamp:
            try:
                configs = read_config(self.root)
            except (ConfigError, OSError) as err:
                if strict:
                    raise ConfigError(str(err)) from None
                self._config_stamp = stamp
                log.error("ignoring %s: %s; keeping the current models",
                          model_config.CONFIG_FILE, err)
                if self._configs is None:
                    with self._lock:
                        self._configs = [m.config for m in self._models.values()]
            else:
                self._config_stamp = stamp
                self._configs = configs or []
                log.info("%s: serving %s", model_config.CONFIG_FILE,
                         ", ".join(c.name for c in self._configs) or "no models")
        return list(self._configs or [])

    def poll(self, strict: bool = False) -> None:
        """One scan: reads the config and version directories, then reconciles."""
        with self._poll_lock:
            self._poll(strict)

    def reload_config(self, configs: list[ModelConfig], timeout: float | None = None) -> None:
        """Serves ``configs`` (TF Serving's HandleReloadConfigRequest) and waits for the loads.

        They replace the models of ``models.config`` (or of the directory scan) until
        that file changes on disk; then the file wins again. ``base_path`` is ignored
        here as in the file: a model is always ``<serving root>/<name>``.
        """
        with self._poll_lock:
            self._reloaded = list(configs)
            self._reloaded_stamp = self._config_file_stamp()
            log.info("reload request: serving %s", ", ".join(c.name for c in configs) or
                     "no models")
            self._poll(strict=False)
        self.wait_idle(timeout)

    def _poll(self, strict: bool) -> None:
        configs = self._current_configs(strict)
        scans = {}
        for config in configs:
            try:
                scans[config.name] = scan_versions(self.root, config.name)
            except OSError as err:  # ScanError or a bucket's: keeps what it has, not "none"
                self._scan_failed(config.name, err)
            else:
                self._scan_ok(config.name)
        with self._lock:
            failed = {name: dict(m.failed) for name, m in self._models.items() if m.failed}
        changed = {
            name: {v for v, fp in versions.items()
                   if v in scans.get(name, {}) and files_stamp(scans[name][v]) != fp}
            for name, versions in failed.items()
        }
        with self._lock:
            wanted = {c.name for c in configs}
            for name in list(self._models):
                if name not in wanted:
                    self._remove(name)
            for config in configs:
                model = self._models.get(config.name)
                if model is None:
                    model = self._models[config.name] = _Model(config)
                    log.info("model %s: watching %s", config.name,
                             os.path.join(self.root, config.name))
                model.config = config
                if config.name in scans:
                    model.on_disk = scans[config.name]
                for version in list(model.failed):
                    if version not in model.on_disk or version in changed.get(config.name, ()):
                        del model.failed[version]
                self._reconcile(model)
            collect, self._unloaded = self._unloaded, False
        if collect:
            gc.collect()

    def _scan_failed(self, name: str, err: OSError) -> None:
        events.count("serving_root_scan_errors", model_name=name)
        message = str(err)
        if self._scan_errors.get(name) != message:
            self._scan_errors[name] = message
            log.error("%s; keeping the versions being served until it works again", message)

    def _scan_ok(self, name: str) -> None:
        if self._scan_errors.pop(name, None) is not None:
            log.info("listing %s works again", f"model directory {name}" if name else
                     "the serving root")

    def _remove(self, name: str) -> None:
        model = self._models.pop(name)
        if model.loaded:
            log.info("model %s: removed; unloading versions %s", name, sorted(model.loaded))
            self._unloaded = True
        model.serving = {}
        model.loaded = {}

    def _reconcile(self, model: _Model) -> None:
        """Starts loads and updates the served versions of one model (lock held)."""
        candidates = set(model.on_disk) - set(model.failed)
        desired = model.config.policy.select(candidates)
        for version in sorted(desired - set(model.loaded) - model.loading):
            self._start_load(model, version)
        keep = set(model.loaded) & desired
        # Availability first, as TF Serving's AvailabilityPreservingPolicy
        # (availability_preserving_policy.cc): while versions are wanted (aspired, failed
        # ones included) but none of them is AVAILABLE, the newest served version that is no
        # longer wanted keeps serving, even when its directory is gone. Only when nothing
        # is wanted any more (no versions on disk) does the model stop serving.
        aspired = model.config.policy.select(set(model.on_disk)) | desired
        if aspired and not keep:
            previous = (set(model.serving) & set(model.loaded)) - desired
            if previous:
                keep.add(max(previous))
        for version in sorted(set(model.loaded) - keep):
            del model.loaded[version]
            model.status[version] = VersionStatus("END")
            self._unloaded = True
            log.info("model %s: unloaded version %d", model.config.name, version)
        serving = {v: model.loaded[v] for v in sorted(keep)}
        if serving.keys() != model.serving.keys():
            model.serving = serving
            log.info("model %s: serving versions %s", model.config.name, sorted(serving) or "none")

    def _start_load(self, model: _Model, version: int) -> None:
        model.loading.add(version)
        model.status[version] = VersionStatus("LOADING")
        self._in_flight_loads += 1
        path = model.on_disk[version]
        try:
            self._pool.submit(self._load, model, version, path)
        except RuntimeError:  # pool shut down
            model.loading.discard(version)
            self._in_flight_loads -= 1

    def _load(self, model: _Model, version: int, path: str) -> None:
        name = model.config.name
        stamp = files_stamp(path)
        servable, error = None, None
        try:
            containment.check_version_tree(self.root, path, model=name, version=version,
                                           allow_outside=self.allow_outside_root)
            servable = self._loader(name, version, path)
        except Exception as err:  # noqa: BLE001 - any failure is reported in the status
            error = err
        with self._lock:
            try:
                if self._models.get(name) is not model or version not in model.loading:
                    return
                model.loading.discard(version)
                if servable is not None:
                    model.loaded[version] = servable
                    model.status[version] = VersionStatus("AVAILABLE")
                    dispatch = getattr(servable, "dispatch", "")
                    log.info("model %s: loaded version %d%s", name, version,
                             f"; calls run on the {dispatch}" if dispatch else "")
                else:
                    code, message = _describe_load_error(error, name, version)
                    model.failed[version] = stamp
                    model.status[version] = VersionStatus(
                        "END", code, containment.public_message(message, self.root))
                    log.error("model %s: version %d failed to load: %s", name, version, message)
                self._reconcile(model)
            finally:
                self._in_flight_loads -= 1
                self._idle.notify_all()

    # -- queries (called from request handlers)

    def model_names(self) -> list[str]:
        """Names of the models being watched."""
        return sorted(self._models)

    def has_model(self, name: str) -> bool:
        """True if ``name`` is a model being watched."""
        return name in self._models

    def served_versions(self, name: str) -> dict[int, Any]:
        """The versions of ``name`` answering requests now: ``{version: servable}``."""
        model = self._models.get(name)
        return dict(model.serving) if model is not None else {}

    def labels(self, name: str) -> dict[str, int]:
        """``name``'s version labels (``{label: version}``) from its config."""
        model = self._models.get(name)
        return dict(model.config.labels) if model is not None else {}

    def resolve(self, name: str, version: int | None = None, label: str | None = None) -> Any:
        """The servable answering a request for ``name`` (+ version or label).

        Unknown model or version: 404 (NOT_FOUND); unknown label: 400, as in
        TF Serving. Without version or label, the highest served version.
        """
        model = self._models.get(name)
        serving = model.serving if model is not None else {}
        if label is not None:
            version = self._label_version(model, label)
        if version is None:
            if not serving:
                raise not_found(f"Servable not found for request: Latest({echo(name)})")
            return serving[max(serving)]
        servable = serving.get(version)
        if servable is None:
            raise not_found(f"Servable not found for request: Specific({echo(name)}, {version})")
        return servable

    @staticmethod
    def _label_version(model: _Model | None, label: str) -> int:
        labels = model.config.labels if model is not None else {}
        if label not in labels:
            raise invalid_argument(f"Unrecognized servable version label: {echo(label)}")
        return labels[label]

    def status(self, name: str, version: int | None = None) -> dict[str, Any]:
        """The GetModelStatus response (versions newest first). There is no label argument:
        TF Serving's GetModelStatus reads only the model spec's name and version
        (get_model_status_impl.cc), so a status request with a label lists every version."""
        return {"model_version_status": [state.to_json(v) for v, state
                                         in self.version_states(name, version)]}

    def version_states(self, name: str,
                       version: int | None = None) -> list[tuple[int, VersionStatus]]:
        """``(version, state)`` of one version, or of every version newest first.

        NOT_FOUND as TF Serving's GetModelStatus (``get_model_status_impl.cc``).
        """
        with self._lock:
            model = self._models.get(name)
            states = dict(model.status) if model is not None else {}
        if version is not None:
            if version not in states:
                raise not_found(f"Could not find version {version} of model {echo(name)}")
            return [(version, states[version])]
        if not states:
            raise not_found(f"Could not find any versions of model {echo(name)}")
        return sorted(states.items(), reverse=True)


def _describe_load_error(error: BaseException | None, name: str, version: int) -> tuple[str, str]:
    code = "UNKNOWN"
    if isinstance(error, ServingError):
        code = error.code
    else:
        error_code = getattr(error, "error_code", None)
        if isinstance(error_code, int):
            code = CODE_NAMES.get(error_code, "UNKNOWN")
    detail = str(error) or type(error).__name__
    message = f"Failed to load {name}/{version}: {detail}"
    if len(message) > _MAX_LOAD_ERROR:
        message = message[:_MAX_LOAD_ERROR] + "...(truncated)"
    return code, message
