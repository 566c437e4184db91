"""A workspace's pruned, fine-tuned network as one file that runs with torch alone.

``safs export WORKSPACE --model`` ends a run with what a user deploys: the network of one
variant (``safs`` by default) with its found activations and learned scales, loadable with
``torch.jit.load`` and no nni_safs, no model source code.

How, and why this way:

* The model is traced (every op of the catalog is plain tensor code, so the trace records the
  activations exactly as they ran, custom or not) and frozen: the graph is inlined into one
  ``forward`` and every tensor the masks do not cover (biases, BN statistics, alpha, beta, op
  parameters) becomes a constant of it. No class of nni_safs or of the model is left in the
  file, so nothing has to be importable where it is loaded.
* The pruned weights (the tensors the checkpoint's masks cover) are stored sparse: their
  nonzero values and int32 positions in one flat index space (:class:`SparseWeights`). Its
  ``__setstate__`` runs at load time and rebuilds them dense, once, so inference runs
  PyTorch's ordinary dense kernels at the original model's speed and gives the same logits.
* The file is written only after it was loaded back and reproduced the workspace model's
  logits bit for bit on test images.
"""
from __future__ import annotations

import copy
import io
import json
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, List, Mapping, Tuple

import torch
from torch import nn

from .atomic import atomic_write
from .jobs import load_kept_model
from .workspace import model_checkpoint

METADATA_FILE = "safs.json"  # provenance inside the archive: torch.jit.load(..., _extra_files={METADATA_FILE: ""})
CHECK_IMAGES = 16  # test images the written file must reproduce exactly before it is kept

_State = Tuple[torch.Tensor, torch.Tensor, List[List[int]], List[int], bool]


class SparseWeights(nn.Module):
    """Pruned weight tensors: saved as nonzero values + flat positions, dense once loaded.

    TorchScript serialises a module through ``__getstate__`` and rebuilds it with
    ``__setstate__`` when it has both, so the file holds only the sparse form while the
    loaded module holds the dense one (``flat``, a buffer). ``forward`` returns each tensor as
    a view of ``flat``: no copy per call.
    """

    def __init__(self, tensors: List[torch.Tensor]) -> None:
        super().__init__()
        flat = torch.cat([t.detach().reshape(-1) for t in tensors])
        positions = flat.nonzero().reshape(-1)
        index_dtype = torch.int32 if flat.numel() <= torch.iinfo(torch.int32).max else torch.int64
        self.indices = positions.to(index_dtype)
        self.values = flat[positions]
        self.shapes: List[List[int]] = [list(t.shape) for t in tensors]
        self.numels: List[int] = [t.numel() for t in tensors]
        self.register_buffer("flat", flat)

    @torch.jit.export
    def __getstate__(self) -> _State:
        return self.indices, self.values, self.shapes, self.numels, self.training

    @torch.jit.export
    def __setstate__(self, state: _State) -> None:
        self.indices, self.values, self.shapes, self.numels, self.training = state
        total = 0
        for numel in self.numels:
            total += numel
        dense = torch.zeros(total, dtype=self.values.dtype, device=self.values.device)
        self.flat = dense.index_put_((self.indices.long(),), self.values)

    def forward(self) -> List[torch.Tensor]:
        tensors: List[torch.Tensor] = []
        start = 0
        for shape, numel in zip(self.shapes, self.numels):
            tensors.append(self.flat[start:start + numel].view(shape))
            start += numel
        return tensors


class _WithSparseWeights(nn.Module):
    """``model`` whose parameters ``names`` are taken from ``weights()`` on every call (traced once)."""

    def __init__(self, model: nn.Module, names: List[str], weights: torch.jit.ScriptModule) -> None:
        super().__init__()
        self.model, self.names, self.weights = model, names, weights
        for name in names:  # the dense copies must not end up in the trace, hence in the file
            delattr(*self._owner(name))

    def _owner(self, name: str) -> tuple[nn.Module, str]:
        path, _, leaf = name.rpartition(".")
        return self.model.get_submodule(path), leaf

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for name, weight in zip(self.names, self.weights()):
            setattr(*self._owner(name), weight)
        return self.model(x)


def export_model(workspace: str | Path, output: str | Path, variant: str = "safs") -> Path:
    """Write ``output``: the ``variant`` model of ``workspace`` as a torch-only TorchScript file.

    ``variant`` is one of :data:`~nni_safs.workspace.MODEL_CHECKPOINTS` that the workspace
    holds. Returns ``output``.
    """
    output = Path(output)
    model, payload, splits = load_kept_model(workspace, variant)
    images = torch.stack([splits.test[i][0] for i in range(min(CHECK_IMAGES, len(splits.test)))])
    meta = {**payload["meta"], "variant": variant, "checkpoint": model_checkpoint(workspace, variant).name,
            "input_shape": list(images.shape[1:]), "num_classes": splits.num_classes}
    data = to_torchscript(model, payload["masks"], images, meta)
    atomic_write(output, lambda handle: handle.write(data))
    return output


def to_torchscript(model: nn.Module, masks: Mapping[str, torch.Tensor], example: torch.Tensor,
                   meta: Mapping[str, Any]) -> bytes:
    """The bytes of the TorchScript file for ``model`` (eval mode) with ``masks``' tensors sparse.

    Refuses a model whose weights are nonzero where its mask is 0 (not the pruned model), and
    a result that does not reproduce ``model``'s logits on ``example`` exactly.
    """
    model = copy.deepcopy(model).requires_grad_(False)  # the dense weights are stripped from this copy
    params = dict(model.named_parameters())
    names = list(masks)
    revived = {name: int(params[name][masks[name] == 0].count_nonzero()) for name in names}
    revived = {name: count for name, count in revived.items() if count}
    if revived:
        raise ValueError(f"weights that the masks prune are nonzero (parameter: count) {revived}: not a pruned model")
    with _quiet_torchscript_deprecation(), torch.no_grad():
        expected = model(example)
        weights = torch.jit.script(SparseWeights([params[name] for name in names]))
        wrapper = _WithSparseWeights(model, names, weights).eval()
        frozen = torch.jit.freeze(torch.jit.trace(wrapper, (example,)), preserved_attrs=["weights"],
                                  optimize_numerics=False)
        buffer = io.BytesIO()
        meta = {**meta, "sparse_weights": names}  # the order of frozen.weights()
        torch.jit.save(frozen, buffer, _extra_files={METADATA_FILE: json.dumps(meta, sort_keys=True)})
        reloaded = torch.jit.load(io.BytesIO(buffer.getvalue()))
        got = reloaded(example)
    if not torch.equal(got, expected):
        raise RuntimeError(f"the exported model's logits differ from the workspace model's (max |diff| "
                           f"{float((got - expected).abs().max()):.3g}); refusing to write it")
    return buffer.getvalue()


@contextmanager
def _quiet_torchscript_deprecation() -> Iterator[None]:
    """torch 2.x warns that TorchScript is deprecated on every call; it is what loads without our code."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated", category=FutureWarning)
        yield
