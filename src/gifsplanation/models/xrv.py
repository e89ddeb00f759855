"""TorchXRayVision models: XRV's own architectures, with weight files read by us, safely.

XRV's constructors download their weights into ``~/.torchxrayvision/models_data/`` and
unpickle them with ``torch.load(weights_only=False)`` (the DenseNet files are pickled whole
modules; the VQGAN's Lightning checkpoint goes through a stub unpickler that still lets
any ``torch.*`` callable run). A weights file from a user, or planted in the cache, could
therefore run code. This module never lets XRV read a file: it builds each model with XRV's
constructors *without* weights (random initialisation, no download), reads the file
itself, and loads the state dict.

Reading a file never calls anything the file names, except torch's own tensor and storage
rebuilders. Every other class a weights file may reference (the ``nn.Module`` classes of a
pickled model, a Lightning checkpoint's callbacks) is replaced by an inert stand-in that
only records its state; any other global (``os.system``, ``builtins.eval`` …) is refused
before unpickling starts. Zip-format files go through ``torch.load(weights_only=True)``
with the stand-ins allow-listed via ``torch.serialization.safe_globals``; legacy-format
files (torch < 1.6, which XRV's DenseNet files are, and which ``weights_only`` cannot read
when they hold modules) through a restricted unpickler with the same allow-list. The
parameters are then taken from the recorded module states, compared key by key and shape
by shape with the architecture, and loaded into XRV's model.

Missing weights are downloaded with XRV's downloader (atomic: ``.part`` then rename) unless
``download=False``; offline, one :class:`WeightsUnavailableError` says which file to put
where. Which XRV models there are, their outputs and URLs, and where their files go are
data in :mod:`.xrv_zoo` (no torch needed).
"""

from __future__ import annotations

import _compat_pickle
import collections
import contextlib
import functools
import io
import json
import logging
import os
import pickle
import pickletools
import types
import warnings
import zipfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from .checkpoint import state_dict_mismatch
from .xrv_zoo import check_kind, config_path_for, config_url, expected_files, weights_url
from .xrv_zoo import weights_filename as weights_filename  # re-exported: it was defined here

log = logging.getLogger(__name__)

#: Largest VQGAN (parameters of ``VQModel``) a config file may ask for: XRV's larger
#: checkpoint (1.23 GB, with its training-only discriminator) is far below it.
MAX_VQGAN_PARAMETERS = 500_000_000
#: Largest attention grid (positions) a VQGAN config may ask for: its attention blocks
#: hold a positions x positions matrix per image (XRV's models: 24x24 and 12x12).
MAX_VQGAN_ATTENTION = 64 * 64
_MAX_YAML_BYTES = 1 << 20


class WeightsUnavailableError(RuntimeError):
    """Named weights are neither on this machine nor downloadable; the message says which
    file to put where."""


class WeightsFileError(ValueError):
    """A weights file that cannot be used: unreadable, not in the expected format, or
    referring to code (refused without running it). The message names the file."""


def import_xrv() -> types.ModuleType:
    """Import torchxrayvision without letting it silence warnings for the whole process."""
    with warnings.catch_warnings():
        import torchxrayvision as xrv  # noqa: PLC0415
        import torchxrayvision.baseline_models.ieee8023  # noqa: F401, PLC0415
        import torchxrayvision.baseline_models.jfhealthcare  # noqa: F401, PLC0415
    return xrv


def _unavailable(name: str, kind: str, weights: str, cache_dir: Any, why: str) -> None:
    files = expected_files(kind, weights, cache_dir)
    role = "autoencoder" if kind in ("resnetae", "vqgan") else "classifier"
    steps = f"{files[0][1]} and save it as {files[0][0]}" + "".join(
        f", and {url} as {path}" for path, url in files[1:]
    )
    keep = (
        f"keep the file name {files[0][0].name}"
        if len(files) == 1
        else f"the {files[0][0].suffix} file, with its {files[1][0].suffix} next to it under "
        "the same name"
    )
    raise WeightsUnavailableError(
        f"weights for {name!r} are not on this machine and {why}. Download {steps}; or pass "
        f"a local copy: on the command line as --{role} PATH ({keep}), in Python as "
        f"get_{role}({name!r}, weights=PATH)"
    ) from None


def build(
    name: str,
    kind: str,
    weights: str,
    weights_path: str | Path | None = None,
    cache_dir: str | Path | None = None,
    download: bool = True,
) -> tuple[nn.Module, Path]:
    """Build an XRV model from a weights file read safely; returns ``(model, weights file)``.

    Args:
        name: registry name (for messages).
        kind: ``"densenet"``, ``"resnetae"``, ``"jf"`` or ``"vqgan"``.
        weights: XRV's weights name (``"densenet121-res224-all"``, ``"101-elastic"``, ``""``
            for JF, ``"cxr2-vqgan-768-sd"``).
        weights_path: a local weights file in XRV's format (overrides the cache); for the
            VQGAN its ``.yaml`` config must sit next to it under the same name.
        cache_dir: weights folder (default ``~/.torchxrayvision/models_data``).
        download: download missing weights with XRV's downloader (default ``True``).

    Raises:
        WeightsUnavailableError: the weights are missing and cannot be downloaded.
        WeightsFileError: the file is unreadable, of the wrong kind, or refers to code.
        FileNotFoundError: ``weights_path`` (or its config) does not exist.
    """
    check_kind(kind)
    if weights_path is not None:
        path = Path(weights_path).expanduser().resolve()
        if not path.is_file():
            raise FileNotFoundError(f"weights file {path} does not exist")
        config = config_path_for(kind, weights, path)
        if config is not None and not config.is_file():
            raise FileNotFoundError(
                f"{path} needs its config {config.name} next to it ({config} does not exist); "
                f"download it from {config_url(kind, weights)}"
            )
    else:
        files = expected_files(kind, weights, cache_dir)
        missing = [(p, url) for p, url in files if not p.is_file()]
        if missing and not download:
            _unavailable(name, kind, weights, cache_dir, "downloading is off")
        for p, url in missing:
            try:
                _download(url, p)
            except Exception as e:  # requests' ConnectionError, HTTPError, timeouts, OSError
                _unavailable(
                    name, kind, weights, cache_dir, f"could not be downloaded ({type(e).__name__})"
                )
        path = files[0][0]
        config = files[1][0] if len(files) > 1 else None
    model = _BUILDERS[kind](weights, path, config)
    return model, path


def _download(url: str, path: Path) -> None:
    xrv = import_xrv()
    log.info("downloading %s to %s", url, path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _quiet():
        xrv.utils.download(url, str(path))


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Keep XRV's prints and warning filters out of the caller's process."""
    buf = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(buf):
        yield
    if buf.getvalue().strip():
        log.debug("torchxrayvision: %s", buf.getvalue().strip())


# --------------------------------------------------------------------------- reading files


class PickledObject:
    """Inert stand-in for a class a weights file references: building it runs nothing, its
    pickled state is only recorded (``pickled_state``). ``pickled_as`` is the name the file
    used."""

    pickled_as = ""
    dump_patches = False  # read by torch's legacy loader when a module's source changed

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.pickled_args = args

    def __setstate__(self, state: Any) -> None:
        self.pickled_state = state

    def __repr__(self) -> str:
        return f"<pickled {self.pickled_as}>"


def _stand_in(full_name: str) -> type[PickledObject]:
    return type(full_name.rsplit(".", 1)[-1], (PickledObject,), {"pickled_as": full_name})


def _canonical(module: str, name: str) -> str:
    """``module.name`` as Python 3 resolves a protocol-2 pickle's global (``__builtin__.set``
    -> ``builtins.set``), the way torch's unpickler does."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        module, name = _compat_pickle.NAME_MAPPING[(module, name)]
    elif module in _compat_pickle.IMPORT_MAPPING:
        module = _compat_pickle.IMPORT_MAPPING[module]
    return f"{module}.{name}"


#: What torch's own loaders may call while reading tensors (and nothing else may be called).
_TENSOR_GLOBALS: dict[str, Any] = {
    "collections.OrderedDict": collections.OrderedDict,
    "builtins.set": set,
    "_codecs.encode": __import__("_codecs").encode,  # how protocol 2 stores bytes
    "torch._utils._rebuild_tensor": torch._utils._rebuild_tensor,
    "torch._utils._rebuild_tensor_v2": torch._utils._rebuild_tensor_v2,
    "torch._utils._rebuild_parameter": torch._utils._rebuild_parameter,
    "torch._utils._rebuild_parameter_with_state": torch._utils._rebuild_parameter_with_state,
}


def _looks_like_torch_data(name: str) -> bool:
    """Globals torch's ``weights_only`` loader allows by default can only be among these
    (torch decides exactly; anything else in this range it refuses itself)."""
    return name in _TENSOR_GLOBALS or name.startswith(("torch.", "collections.", "_codecs."))


def pickle_globals(path: str | Path) -> set[str]:
    """Every global (``module.name``) the pickles of a ``torch.save`` file reference, read
    without unpickling (``pickletools``); zip and legacy formats.

    Raises:
        WeightsFileError: the file is neither (or uses pickle features torch never writes).
    """
    path = Path(path)
    found: set[str] = set()
    with open(path, "rb") as f:
        if zipfile.is_zipfile(f):
            f.seek(0)
            with zipfile.ZipFile(f) as z:
                pkl = [n for n in z.namelist() if n == "data.pkl" or n.endswith("/data.pkl")]
                if len(pkl) != 1:
                    raise WeightsFileError(f"{path}: a zip file but not a torch.save file")
                if z.getinfo(pkl[0]).file_size > 1 << 28:
                    raise WeightsFileError(f"{path}: its pickle is implausibly large")
                streams, count = io.BytesIO(z.read(pkl[0])), 1
                _scan(streams, count, found, path)
        else:
            f.seek(0)
            # legacy format: magic number, protocol, system info, then the object
            _scan(f, 4, found, path)
    return found


def _scan(stream: Any, count: int, found: set[str], path: Path) -> None:
    try:
        for _ in range(count):
            for op, arg, _pos in pickletools.genops(stream):
                if op.name == "GLOBAL":
                    module, name = str(arg).split(" ", 1)
                    found.add(_canonical(module, name))
                elif op.name in ("STACK_GLOBAL", "INST", "OBJ", "EXT1", "EXT2", "EXT4"):
                    raise WeightsFileError(
                        f"{path}: uses pickle opcode {op.name}, which torch.save never writes"
                    )
    except WeightsFileError:
        raise
    except Exception as e:
        raise WeightsFileError(
            f"{path}: not a torch.save file ({type(e).__name__}: {_first_line(e)})"
        ) from None


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return (text.splitlines() or [""])[0][:200]


def safe_unpickle(path: str | Path, allowed: Callable[[str], bool], what: str, advice: str) -> Any:
    """Read a ``torch.save`` file, standing in :class:`PickledObject` for each referenced
    class that ``allowed`` accepts, and refusing the file if it references anything else
    that is not torch tensor data.

    Args:
        path: the file.
        allowed: which ``module.name`` globals may appear (as inert stand-ins).
        what: what the file should be, for messages ("a TorchXRayVision DenseNet").
        advice: what to do when the file is refused (one clause).

    Raises:
        WeightsFileError: one line naming the file, what is wrong and ``advice``.
    """
    path = Path(path)
    try:
        names = pickle_globals(path)
    except (OSError, WeightsFileError) as e:
        raise WeightsFileError(f"{e}; {advice}") from None
    foreign = sorted(n for n in names if not allowed(n) and not _looks_like_torch_data(n))
    if foreign:
        more = f" (+{len(foreign) - 3} more)" if len(foreign) > 3 else ""
        shown = ", ".join(foreign[:3]) + more
        raise WeightsFileError(
            f"{path}: refused without unpickling it: it refers to {shown}, which {what} "
            f"never contains (it could run code); {advice}"
        )
    stand_ins = {n: _stand_in(n) for n in names if allowed(n) and n not in _TENSOR_GLOBALS}
    try:
        with open(path, "rb") as f:
            zipped = zipfile.is_zipfile(f)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if zipped:
                if not hasattr(torch.serialization, "safe_globals"):
                    raise RuntimeError("this torch has no torch.serialization.safe_globals")
                with torch.serialization.safe_globals([(c, n) for n, c in stand_ins.items()]):
                    return torch.load(path, map_location="cpu", weights_only=True)
            return torch.load(
                path,
                map_location="cpu",
                weights_only=False,  # legacy format: our restricted unpickler instead
                pickle_module=_restricted_pickle(stand_ins),
            )
    except Exception as e:
        raise WeightsFileError(
            f"{path}: cannot be read as {what} ({type(e).__name__}: {_first_line(e)}); {advice}"
        ) from None


def _restricted_pickle(stand_ins: Mapping[str, type]) -> types.SimpleNamespace:
    """A ``pickle_module`` for ``torch.load`` whose unpickler resolves globals only to torch's
    tensor rebuilders and the given stand-ins (the allow-list of ``weights_only``, for the
    legacy format that ``weights_only`` cannot read)."""
    table = {**_TENSOR_GLOBALS, **stand_ins}

    class Unpickler(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            full = _canonical(module, name)
            if full in table:
                return table[full]
            raise pickle.UnpicklingError(f"global {full} is not allowed")

    def load(file: Any, **kwargs: Any) -> Any:
        return Unpickler(file, **kwargs).load()

    return types.SimpleNamespace(
        __name__="gifsplanation_restricted_pickle", Unpickler=Unpickler, load=load
    )


def module_state_dict(obj: PickledObject, max_depth: int = 64) -> dict[str, torch.Tensor]:
    """The state dict of a pickled ``nn.Module`` (read as stand-ins): its parameters and
    persistent buffers, by walking ``_parameters``, ``_buffers`` and ``_modules``."""
    out: dict[str, torch.Tensor] = {}

    def walk(node: Any, prefix: str, path: tuple[int, ...]) -> None:
        if len(path) > max_depth or id(node) in path:
            raise ValueError("modules nested too deeply or containing themselves")
        state = getattr(node, "pickled_state", None)
        if not isinstance(node, PickledObject) or not isinstance(state, dict):
            raise ValueError(f"{prefix or 'the top level'} is not a pickled module")
        skip = state.get("_non_persistent_buffers_set") or set()
        for attr in ("_parameters", "_buffers"):
            entries = state.get(attr) or {}
            if not isinstance(entries, dict):
                raise ValueError(f"{prefix}{attr} is not a dict")
            for k, v in entries.items():
                if v is None or (attr == "_buffers" and k in skip):
                    continue
                if not isinstance(k, str) or not isinstance(v, torch.Tensor):
                    raise ValueError(f"{prefix}{attr} holds a {type(v).__name__}")
                out[prefix + k] = v
        children = state.get("_modules") or {}
        if not isinstance(children, dict):
            raise ValueError(f"{prefix}_modules is not a dict")
        for k, child in children.items():
            if child is not None:
                walk(child, f"{prefix}{k}.", (*path, id(node)))

    walk(obj, "", ())
    return out


def _as_state_dict(obj: Any) -> dict[str, torch.Tensor]:
    """A pickled module or a plain state dict -> ``{name: tensor}``."""
    if isinstance(obj, PickledObject):
        return module_state_dict(obj)
    if isinstance(obj, Mapping) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    ):
        return dict(obj)
    raise ValueError(f"holds a {type(obj).__name__}, not a model or a state dict")


@functools.cache
def _module_classes(kind: str, weights: str) -> frozenset[str]:
    """The ``nn.Module`` classes (``module.name``) of an XRV architecture: what a pickled
    model of that kind may reference. Built on the meta device (nothing allocated)."""
    with torch.device("meta"):
        model = _architecture(kind, weights)
    names = {f"{type(m).__module__}.{type(m).__qualname__}" for m in model.modules()}
    # Modules pickled by torch < 1.5 carry their backend through this function.
    return frozenset(names | {"torch.nn.backends.thnn._get_thnn_function_backend"})


def _read_state_dict(
    kind: str, weights: str, path: Path, expected: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Read a DenseNet/ResNetAE/JF weights file safely and check it against ``expected``."""
    what = {
        "densenet": "a TorchXRayVision DenseNet weights file",
        "resnetae": "a TorchXRayVision ResNetAE weights file",
        "jf": "a JF Healthcare DenseNet weights file",
    }[kind]
    advice = f"download the genuine file again from {weights_url(kind, weights)}"
    classes = _module_classes(kind, weights)
    obj = safe_unpickle(path, classes.__contains__, what, advice)
    try:
        state = _as_state_dict(obj)
    except ValueError as e:
        raise WeightsFileError(f"{path}: not {what}: it {e}; {advice}") from None
    if kind == "densenet":
        state.pop("op_threshs", None)  # a saved calibrated model: we set XRV's thresholds
    problem = state_dict_mismatch(expected, state)
    if problem:
        raise WeightsFileError(f"{path}: does not fit {what}: {problem}; {advice}")
    return state


# --------------------------------------------------------------------------- architectures


def _bare(cls: type[nn.Module]) -> Any:
    """An instance of an XRV wrapper class whose constructor would load weights by itself:
    only ``nn.Module`` is initialised; the caller sets what the constructor would."""
    obj = cls.__new__(cls)
    nn.Module.__init__(obj)
    return obj


def jf_config() -> types.SimpleNamespace:
    """JF Healthcare's own config (XRV ships it), for building without downloads."""
    xrv = import_xrv()
    folder = os.path.dirname(xrv.baseline_models.jfhealthcare.__file__)
    with open(os.path.join(folder, "config", "example.json")) as f:
        conf = json.load(f)
    # XRV's JF constructor first fetches torchvision's ImageNet DenseNet-121, which the JF
    # weights then overwrite entirely: build it without that download.
    conf["pretrained"] = False
    return types.SimpleNamespace(**conf)


def _architecture(kind: str, weights: str) -> nn.Module:
    """The random-weight architecture the weights file must fit (XRV's constructors)."""
    xrv = import_xrv()
    with _quiet():
        if kind == "densenet":
            n = len(xrv.models.model_urls[weights]["labels"])
            return xrv.models.DenseNet(weights=None, num_classes=n)
        if kind == "resnetae":
            return getattr(xrv.autoencoders, xrv.autoencoders.model_urls[weights]["class"])()
        if kind == "jf":
            return xrv.baseline_models.jfhealthcare.model.classifier.Classifier(jf_config())
    raise ValueError(f"no fixed architecture for XRV kind {kind!r}")


def _build_densenet(weights: str, path: Path, config: Path | None) -> nn.Module:
    """XRV's DenseNet, cut to its named outputs.

    XRV's DenseNets all have 18 outputs, one per pathology of XRV's default list; a model
    trained on a dataset without some of them leaves those outputs unnamed (``""``) and
    meaningless. The model built here keeps only the named ones: the rows of the last
    layer and the calibration thresholds of those outputs, so output ``i`` is
    ``targets[i]`` and equals XRV's output ``xrv_outputs[i]``.
    """
    xrv = import_xrv()
    info = xrv.models.model_urls[weights]
    with torch.device("meta"):
        expected = _architecture("densenet", weights).state_dict()
    state = _read_state_dict("densenet", weights, path, expected)
    keep = [i for i, label in enumerate(info["labels"]) if label]
    state["classifier.weight"] = state["classifier.weight"][keep]
    state["classifier.bias"] = state["classifier.bias"][keep]
    with _quiet():
        model = xrv.models.DenseNet(weights=None, num_classes=len(keep))
    model.load_state_dict(state)
    # what XRV's constructor sets when it loads weights itself
    model.weights = weights
    model.weights_filename_local = str(path)
    model.targets = [info["labels"][i] for i in keep]
    model.pathologies = model.targets
    model.op_threshs = torch.tensor(info["op_threshs"], dtype=torch.float32)[keep]
    if "input_resolution" in info:
        model.input_resolution = info["input_resolution"]
    model.xrv_outputs = keep
    return model.eval()


def _build_resnetae(weights: str, path: Path, config: Path | None) -> nn.Module:
    xrv = import_xrv()
    ae = _architecture("resnetae", weights)
    state = _read_state_dict("resnetae", weights, path, ae.state_dict())
    ae.load_state_dict(state)
    # what xrv.autoencoders.ResNetAE sets after loading
    ae.weights = weights
    ae.weights_metadata = xrv.autoencoders.model_urls[weights]
    ae.description = ae.weights_metadata["description"]
    return ae.eval()


def _build_jf(weights: str, path: Path, config: Path | None) -> nn.Module:
    xrv = import_xrv()
    jf_cls = xrv.baseline_models.jfhealthcare.DenseNet
    net = _architecture("jf", weights)
    state = _read_state_dict("jf", weights, path, net.state_dict())
    net.load_state_dict(state)
    model = _bare(jf_cls)  # its constructor reads ~/.torchxrayvision itself
    model.apply_sigmoid = True
    model.cfg = jf_config()
    model.model = nn.DataParallel(net).eval()
    model.weights_filename_local = str(path)
    model.pathologies = model.targets
    return model.eval()


# --------------------------------------------------------------------------- the VQGAN


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read the subset of YAML that model configs use: nested mappings, lists of scalars
    (block ``- x`` items, also at their key's indentation, or inline ``[a, b]``) and
    scalars. Anything else is an error naming the line.
    """
    path = Path(path)
    if path.stat().st_size > _MAX_YAML_BYTES:
        raise ValueError(f"{path}: larger than a model config can be")
    rows = []
    for n, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        text = raw.split(" #", 1)[0].rstrip() if "'" not in raw and '"' not in raw else raw
        if not text.strip() or text.lstrip().startswith("#"):
            continue
        if "\t" in text[: len(text) - len(text.lstrip())]:
            raise ValueError(f"{path}:{n}: tab indentation")
        rows.append((n, len(text) - len(text.lstrip()), text.strip()))
    root: dict[str, Any] = {}
    stack: list[tuple[int, Any]] = [(-1, root)]
    for k, (n, indent, line) in enumerate(rows):
        item = line == "-" or line.startswith("- ")
        while len(stack) > 1:
            top_indent, top = stack[-1]
            if top_indent < indent or (top_indent == indent and item and isinstance(top, list)):
                break
            stack.pop()
        parent = stack[-1][1]
        if item:
            if not isinstance(parent, list):
                raise ValueError(f"{path}:{n}: a list item outside a list")
            parent.append(_yaml_scalar(line[1:].strip(), path, n))
            continue
        key, sep, value = line.partition(":")
        if not sep or not isinstance(parent, dict) or (value and not value.startswith(" ")):
            raise ValueError(f"{path}:{n}: expected 'key: value'")
        key = key.strip().strip("'\"")
        if value.strip():
            parent[key] = _yaml_scalar(value.strip(), path, n)
            continue
        nxt = rows[k + 1] if k + 1 < len(rows) else None
        is_list = nxt is not None and nxt[1] >= indent and (nxt[2] == "-" or nxt[2][:2] == "- ")
        child: Any = [] if is_list else {}
        parent[key] = child
        stack.append((indent, child))
    return root


def _yaml_scalar(text: str, path: Path, n: int) -> Any:
    if text.startswith("[") and text.endswith("]"):
        inner = text[1:-1].strip()
        return [_yaml_scalar(t.strip(), path, n) for t in inner.split(",")] if inner else []
    if text == "{}":
        return {}
    if text[:1] in "[{&*!|>":
        raise ValueError(f"{path}:{n}: unsupported YAML {text[:20]!r}")
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("null", "~"):
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


_DDCONFIG_BOUNDS: dict[str, tuple[int, int]] = {
    "ch": (1, 1024),
    "out_ch": (1, 16),
    "num_res_blocks": (0, 8),
    "in_channels": (3, 3),  # XRV's wrapper repeats the grey channel three times
    "resolution": (16, 4096),
    "z_channels": (1, 4096),
}


def vqgan_config(path: str | Path) -> dict[str, Any]:
    """Read and bound a VQGAN config (``model.params``: ``ddconfig``, ``n_embed``,
    ``embed_dim``) before anything is built; returns the checked ``params``.

    Refused (``WeightsFileError``): missing or wrongly typed fields, sizes outside
    :data:`_DDCONFIG_BOUNDS`, an attention grid larger than :data:`MAX_VQGAN_ATTENTION`
    positions, or more than :data:`MAX_VQGAN_PARAMETERS` parameters (counted on the meta
    device, nothing allocated).
    """
    path = Path(path)
    try:
        cfg = read_yaml(path)
        params = cfg["model"]["params"]
        dd = dict(params["ddconfig"])
        out: dict[str, Any] = {"ddconfig": {}, "n_embed": 0, "embed_dim": 0}
        for key, (lo, hi) in _DDCONFIG_BOUNDS.items():
            out["ddconfig"][key] = _bounded_int(dd, key, lo, hi)
        mult = dd.get("ch_mult")
        if not isinstance(mult, list) or not 1 <= len(mult) <= 8:
            raise ValueError("ch_mult must be a list of 1 to 8 integers")
        out["ddconfig"]["ch_mult"] = [_bounded_int({"ch_mult": m}, "ch_mult", 1, 16) for m in mult]
        attn = dd.get("attn_resolutions", [])
        if not isinstance(attn, list) or len(attn) > 16:
            raise ValueError("attn_resolutions must be a list of at most 16 integers")
        attn = [_bounded_int({"attn_resolutions": a}, "attn_resolutions", 1, 4096) for a in attn]
        out["ddconfig"]["attn_resolutions"] = attn
        dropout = dd.get("dropout", 0.0)
        if isinstance(dropout, bool) or not isinstance(dropout, int | float):
            raise ValueError("dropout must be a number")
        if not 0 <= dropout < 1:
            raise ValueError("dropout must be in [0, 1)")
        out["ddconfig"]["dropout"] = float(dropout)
        for key, default in (("double_z", False), ("resamp_with_conv", True)):
            value = dd.get(key, default)
            if not isinstance(value, bool):
                raise ValueError(f"{key} must be true or false")
            out["ddconfig"][key] = value
        if dd.get("give_pre_end", False) is not False:
            raise ValueError("give_pre_end must be false (decode must return images)")
        out["n_embed"] = _bounded_int(params, "n_embed", 1, 65536)
        out["embed_dim"] = _bounded_int(params, "embed_dim", 1, 4096)
        d = out["ddconfig"]
        levels = len(d["ch_mult"]) - 1
        if d["resolution"] % 2**levels:
            raise ValueError(f"resolution {d['resolution']} is not divisible by 2^{levels}")
        lowest = d["resolution"] // 2**levels
        used = [r for r in attn if any(r == d["resolution"] // 2**i for i in range(levels + 1))]
        if max([lowest, *used]) ** 2 > MAX_VQGAN_ATTENTION:
            raise ValueError(
                f"attention over a {max([lowest, *used])}^2 grid (at most "
                f"{MAX_VQGAN_ATTENTION} positions)"
            )
        if d["ch"] % 32:
            raise ValueError(f"ch = {d['ch']} is not a multiple of 32 (group normalisation)")
    except WeightsFileError:
        raise
    except (KeyError, TypeError) as e:
        raise WeightsFileError(f"{path}: not a VQGAN config (missing or wrong {e})") from None
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise WeightsFileError(f"{path}: not a usable VQGAN config: {e}") from None
    n = _count_parameters(lambda: _vqmodel(out))
    if n > MAX_VQGAN_PARAMETERS:
        raise WeightsFileError(
            f"{path}: asks for a VQGAN of {n / 1e6:.0f} M parameters, above the limit of "
            f"{MAX_VQGAN_PARAMETERS / 1e6:.0f} M; refused"
        )
    return out


def _bounded_int(d: Mapping[str, Any], key: str, lo: int, hi: int) -> int:
    v = d[key]
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError(f"{key} must be an integer, got {v!r}")
    if not lo <= v <= hi:
        raise ValueError(f"{key} = {v} is outside [{lo}, {hi}]")
    return v


def _count_parameters(make: Callable[[], nn.Module]) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in make().parameters())


def _vqmodel(params: Mapping[str, Any]) -> nn.Module:
    xrv = import_xrv()
    return xrv.baseline_models.ieee8023.VQModel(
        ddconfig=dict(params["ddconfig"]),
        n_embed=params["n_embed"],
        embed_dim=params["embed_dim"],
    )


#: Modules whose names in a checkpoint mean code, not data: refused with their name.
_CODE_MODULES = frozenset(
    "builtins os posix nt subprocess sys importlib runpy pickle marshal shutil socket "
    "ctypes code codeop pty types operator functools webbrowser io pathlib tempfile "
    "multiprocessing threading signal inspect gc weakref".split()
)


def _lightning_global(name: str) -> bool:
    """What a Lightning checkpoint may reference besides tensors (callbacks, hyper-parameter
    containers, numpy scalars …): anything but code-running modules. Every one of these is
    an inert stand-in; nothing it names is ever called."""
    return name.split(".", 1)[0] not in _CODE_MODULES


def _build_vqgan(weights: str, path: Path, config: Path | None) -> nn.Module:
    xrv = import_xrv()
    vq_pkg = xrv.baseline_models.ieee8023
    if config is None:
        raise ValueError("the VQGAN needs its .yaml config")
    params = vqgan_config(config)
    advice = f"download the genuine file again from {weights_url('vqgan', weights)}"
    what = "a TorchXRayVision VQGAN checkpoint"
    ckpt = safe_unpickle(path, _lightning_global, what, advice)
    raw = ckpt.get("state_dict") if isinstance(ckpt, dict) else None
    if not isinstance(raw, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in raw.items()
    ):
        raise WeightsFileError(f"{path}: not {what}: no state_dict of tensors; {advice}")
    # training-only modules (loss, discriminator, LPIPS) are dropped, as XRV does
    state = {k: v for k, v in raw.items() if not k.startswith("loss.")}
    with torch.device("meta"):
        expected = _vqmodel(params).state_dict()
    problem = state_dict_mismatch(expected, state)
    if problem:
        raise WeightsFileError(f"{path}: does not fit its config {config.name}: {problem}")
    vq = _bare(vq_pkg.VQGAN)  # its constructor unpickles the checkpoint unsafely
    vq.weights = weights
    vq.weights_metadata = vq_pkg.model_urls[weights]
    vq.description = vq.weights_metadata["description"]
    vq.config = params
    vq.resolution = params["ddconfig"]["resolution"]
    vq.model = _vqmodel(params)
    vq.model.load_state_dict(state)
    vq.model.eval()
    vq.upsample = nn.Upsample(
        size=(vq.resolution, vq.resolution), mode="bilinear", align_corners=False
    )
    return VQGANAutoencoder(vq, config_path=config)


class VQGANAutoencoder(nn.Module):
    """TorchXRayVision's CXR VQGAN seen at the classifier's input size.

    The VQGAN works at its own resolution (768² for XRV's weights): ``encode`` takes images
    of any size in [-1024, 1024] (XRV's VQGAN resizes them up itself) and returns the
    quantised latents; ``decode`` returns images resized (bilinear, antialiased)
    from the VQGAN's resolution to ``input_size``, so a batch of decoded latents matches the
    classifier's input. Both are differentiable in the latents (the quantiser passes
    gradients straight through, as in XRV).

    Args:
        vqgan: ``torchxrayvision.baseline_models.ieee8023.VQGAN`` with weights loaded.
        input_size: side of the decoded images (default 224, the XRV classifiers' input;
            set the attribute to change it).
        config_path: the ``.yaml`` the model was built from (provenance).
    """

    def __init__(self, vqgan: nn.Module, input_size: int = 224, config_path: Path | None = None):
        super().__init__()
        self.vqgan = vqgan
        self.input_size = int(input_size)
        self.resolution = int(vqgan.resolution)
        self.config_path = str(config_path) if config_path else None
        self.weights = getattr(vqgan, "weights", None)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of a latent (independent of the input size)."""
        cfg = self.vqgan.config
        side = self.resolution // 2 ** (len(cfg["ddconfig"]["ch_mult"]) - 1)
        return (int(cfg["embed_dim"]), side, side)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``(B, 1, H, W)`` in [-1024, 1024] -> quantised latents."""
        if x.ndim != 4 or x.shape[1] != 1:
            raise ValueError(f"expected images of shape (B, 1, H, W), got {tuple(x.shape)}")
        return self.vqgan.encode(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latents -> images ``(B, 1, input_size, input_size)`` in [-1024, 1024]."""
        out = self.vqgan.decode(z)
        if out.shape[-1] != self.input_size or out.shape[-2] != self.input_size:
            out = F.interpolate(
                out,
                size=(self.input_size, self.input_size),
                mode="bilinear",
                align_corners=False,
                antialias=out.shape[-1] > self.input_size,
            )
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruct ``x`` at ``input_size``."""
        return self.decode(self.encode(x))


_BUILDERS: dict[str, Callable[[str, Path, Path | None], nn.Module]] = {
    "densenet": _build_densenet,
    "resnetae": _build_resnetae,
    "jf": _build_jf,
    "vqgan": _build_vqgan,
}
