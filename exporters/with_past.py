"""ONNX with past: `specc export RUN --onnx --with-past` -> export/model_with_past.onnx.

The graph is the KV-cache pass's `concat` decoder (`compiler.kvcache.derive`), so it works for any
spec with causal attention, and it uses the names Optimum and onnxruntime-genai use:

  inputs   input_ids [batch, sequence_length] int64
           attention_mask [batch, past_sequence_length + sequence_length] int64 (1: a token, 0: padding)
           position_ids [batch, sequence_length] int64
           past_key_values.{i}.key / .value [batch, kv_heads, past_sequence_length, head_dim] (may be 0 long)
  outputs  logits [batch, sequence_length, vocab]
           present.{i}.key / .value [batch, kv_heads, past_sequence_length + sequence_length, head_dim]

Every input is present in the file; "optional" in the sense of the runtimes: a caller with no padding
passes all ones and positions past..past+new-1 (`OnnxDecoder` does that for it).

Parity steps the file in onnxruntime: two prompts of different lengths in one batch (left-padded),
then greedy steps feeding `present` back as `past`, each step's logits against the eager model on each
row's tokens so far.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from compiler.decoding import positions_from_mask

from . import blame, onnx_meta
from .artifact import Artifact, staged
from .capture import capture
from .errors import ExportError
from .parity import Check, compare
from .to_onnx import session
from .torchlib import cached_registry

FILE = "model_with_past.onnx"
STEPS = 16  # greedy steps checked after the prompt


def names(layers: int) -> tuple[list[str], list[str]]:
    """(inputs, outputs) in Optimum's order."""
    pasts = [f"past_key_values.{i}.{kv}" for i in range(layers) for kv in ("key", "value")]
    presents = [f"present.{i}.{kv}" for i in range(layers) for kv in ("key", "value")]
    return ["input_ids", "attention_mask", "position_ids", *pasts], ["logits", *presents]


def export(compiled: Any, export_dir: Path, opset: int, meta: dict[str, str], special: dict[str, Any]) -> Artifact:
    """Derive the concat decoder, export it with dynamic batch, sequence and past, write the file and
    its genai_config.json."""
    from compiler.kvcache import derive, plan
    start = time.perf_counter()
    found = plan(compiled)
    step = derive(compiled, "concat", found).train(False)
    ins, outs = names(len(found.attentions))
    example = _example(found, batch=2, past=3, new=2)
    with capture(None) as c, cached_registry():
        try:
            program = torch.onnx.export(step, tuple(example), None, dynamo=True, dynamic_shapes=_dynamic(step, found),
                                        input_names=ins, output_names=outs, opset_version=opset, verbose=False)
        except Exception as e:
            raise ExportError("onnx-with-past", f"the decoder with past does not export: {blame.root_cause(e)}",
                              "check that the model exports without --with-past first") from None
    model = program.model_proto
    info = {"kv_layers": str(len(found.attentions)), "max_length": str(found.max_len),
            "vocab": str(found.vocab or ""), "kv_shapes": json.dumps(found.kv_shapes)}
    onnx_meta.write(model, dict(meta, **info, parity="pending"))
    path = export_dir / FILE
    export_dir.mkdir(parents=True, exist_ok=True)
    with staged(path) as tmp:
        onnx.save(model, str(tmp))
    write_genai_config(found, export_dir, special)
    notes = [f"{GENAI} beside it: the export folder runs in onnxruntime-genai"]
    return Artifact("onnx-with-past", path, time.perf_counter() - start, notes, c.summary(), "dynamo")


def _example(found: Any, batch: int, past: int, new: int) -> list[torch.Tensor]:
    ids = torch.randint(0, found.vocab or 2, (batch, new))
    mask = torch.ones(batch, past + new, dtype=torch.long)
    pos = torch.arange(past, past + new).expand(batch, new).contiguous()
    kv = [torch.randn(batch, h, past, d) for h, d in found.kv_shapes for _ in range(2)]
    return [ids, mask, pos, *kv]


def _dynamic(step: Any, found: Any) -> dict[str, Any]:
    """Dynamic batch, sequence and past; attention_mask's length is past + sequence, which the exporter
    derives (Dim.AUTO) rather than taking as a third free size."""
    from torch.export import Dim
    batch, seq = Dim("batch"), Dim("sequence_length", max=found.max_len)
    past = Dim("past_sequence_length", min=0, max=found.max_len)
    placeholders = [n.name for n in step.graph.nodes if n.op == "placeholder"]
    shapes = {placeholders[0]: {0: batch, 1: seq}, "attention_mask": {0: batch, 1: Dim.AUTO},
              "position_ids": {0: batch, 1: seq}}
    shapes.update({name: {0: batch, 2: past} for name in placeholders[3:]})
    return shapes


GENAI = "genai_config.json"


def write_genai_config(found: Any, export_dir: Path, special: dict[str, Any]) -> Path:
    """export/genai_config.json: the folder runs in onnxruntime-genai (`og.Model(export_dir)`). `special`
    holds bos/eos/pad token ids where the run knows them (an imported config.json); without an eos the
    runtime generates up to max_length."""
    kv_heads, head_dim = found.kv_shapes[0]
    model = {"context_length": found.max_len, "type": "decoder", "vocab_size": found.vocab,
             "pad_token_id": special.get("pad_token_id", 0),
             "decoder": {"filename": FILE, "session_options": {"log_id": "onnxruntime-genai", "provider_options": []},
                         "head_size": head_dim, "hidden_size": found.heads[0] * head_dim,
                         "num_attention_heads": found.heads[0], "num_hidden_layers": len(found.attentions),
                         "num_key_value_heads": kv_heads,
                         "inputs": {"input_ids": "input_ids", "attention_mask": "attention_mask",
                                    "position_ids": "position_ids", "past_key_names": "past_key_values.%d.key",
                                    "past_value_names": "past_key_values.%d.value"},
                         "outputs": {"logits": "logits", "present_key_names": "present.%d.key",
                                     "present_value_names": "present.%d.value"}}}
    model.update({k: special[k] for k in ("bos_token_id", "eos_token_id") if special.get(k) is not None})
    search = {"do_sample": False, "max_length": found.max_len, "min_length": 0, "num_beams": 1,
              "num_return_sequences": 1, "past_present_share_buffer": False, "top_k": 1, "top_p": 1.0,
              "temperature": 1.0, "repetition_penalty": 1.0, "early_stopping": True, "length_penalty": 1.0,
              "no_repeat_ngram_size": 0, "diversity_penalty": 0.0}
    path = export_dir / GENAI
    with staged(path) as tmp:
        tmp.write_text(json.dumps({"model": model, "search": search}, indent=2) + "\n")
    return path


class OnnxDecoder:
    """model_with_past.onnx in onnxruntime behind the same `start`/`step` as `compiler.decoding.Decoder`."""

    def __init__(self, sess: Any, max_len: int, vocab: int | None, kv_shapes: list[tuple[int, int]]):
        self.sess, self.max_len, self.vocab, self.kv_shapes = sess, max_len, vocab, kv_shapes
        self.inputs, _ = names(len(kv_shapes))
        self.length, self.mask, self.positions, self.past = 0, np.zeros((0, 0), np.int64), None, []

    @classmethod
    def load(cls, path: Path) -> "OnnxDecoder":
        from compiler.errors import SpecError, file_loc
        if not path.is_file():
            raise SpecError.at(file_loc(str(path)), "there is no ONNX export with past to decode with",
                               f"write it first: specc export {path.parent.parent} --onnx --with-past")
        model = onnx.load(str(path), load_external_data=False)
        meta = {p.key: p.value for p in model.metadata_props}
        kv = [tuple(s) for s in json.loads(meta.get("specc.kv_shapes", "[]"))]
        vocab = int(meta["specc.vocab"]) if meta.get("specc.vocab") else None
        return cls(session(path), int(meta.get("specc.max_length", "0")) or 2**31, vocab, kv)

    def start(self, rows: list[list[int]]) -> torch.Tensor:
        width = max(len(r) for r in rows)
        ids = np.zeros((len(rows), width), np.int64)
        self.mask = np.zeros((len(rows), width), np.int64)
        for b, r in enumerate(rows):
            ids[b, width - len(r):] = r
            self.mask[b, width - len(r):] = 1
        positions = positions_from_mask(torch.from_numpy(self.mask)).numpy()
        self.past = [np.zeros((len(rows), h, 0, d), np.float32) for h, d in self.kv_shapes for _ in range(2)]
        self.length = 0
        logits = self._run(ids, positions)
        self.positions = positions[:, -1:]
        return logits

    def step(self, ids: torch.Tensor) -> torch.Tensor:
        self.mask = np.concatenate([self.mask, np.ones((self.mask.shape[0], 1), np.int64)], axis=1)
        self.positions = self.positions + 1
        return self._run(ids.view(-1, 1).numpy().astype(np.int64), self.positions)

    def _run(self, ids: np.ndarray, positions: np.ndarray) -> torch.Tensor:
        feeds = dict(zip(self.inputs, [ids, self.mask, positions, *self.past]))
        logits, *self.past = self.sess.run(None, feeds)
        self.length += ids.shape[1]
        return torch.from_numpy(logits[:, -1, :])


@torch.no_grad()
def check(compiled: Any, path: Path, atol: float, rtol: float) -> Check:
    """Step the file in onnxruntime (a padded batch of two prompts, then `STEPS` greedy tokens) against
    the eager model, which recomputes each row's whole sequence at every step."""
    model = compiled.module.train(False)
    dec = OnnxDecoder.load(path)
    g = torch.Generator().manual_seed(0)
    high = dec.vocab or 2
    rows = [torch.randint(0, high, (n,), generator=g).tolist() for n in (5, 3)]
    steps = min(STEPS, dec.max_len - 5)
    got, ref = [dec.start(rows)], []
    for _ in range(steps):
        nxt = got[-1].argmax(-1)
        for r, t in zip(rows, nxt.tolist()):
            r.append(int(t))
        got.append(dec.step(nxt))
    for b, r in enumerate(rows):  # row b held len(r) - steps tokens after the prompt, then one more each step
        out = model(torch.tensor([r]))
        out = out[0] if isinstance(out, tuple) else out
        ref.append(out[0, len(r) - steps - 1:])  # (steps + 1, V)
    c = compare(["logits"], [torch.stack(ref, 1)], [torch.stack(got)], atol, rtol)
    shapes = {"input_ids": [2, 5], "steps": [steps]}
    check_ = Check.of("onnx-with-past", {"batch": 2, "steps": steps}, shapes, c)
    check_.note = f"prompts of 5 and 3 tokens (left-padded) then {steps} greedy steps, present fed back as past"
    return check_
