"""What the GPU paths rest on, checked on the CPU: every input is moved at the model's boundary,
chunked streaming lands every byte, the int8 Triton kernel computes the dequantized product (in
Triton's CPU interpreter), and the decode-step choice per device. tests/gpu runs them on CUDA."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file, save_file

import glmv_cli
from glmv_cli.errors import ModelError
from glmv_cli.generate import Generation
from glmv_cli.model.glm4v import on_model_device
from glmv_cli.safetensors_io import read_header
from glmv_cli.streaming import host_ring, stream_into
from tests.model.conftest import model_kwargs


def interpreted(script: str, *args: str, timeout: int = 300, **env: str) -> subprocess.CompletedProcess:
    """Run `script` in a fresh Python with Triton's CPU interpreter on (it must be set before Triton is
    imported). Skipped without Triton, and with a Triton before 3.7 under numpy 2.4 or later: that
    interpreter calls int() on one-element arrays, which numpy 2.4 refuses."""
    triton = pytest.importorskip("triton")
    import numpy

    def version(text: str) -> tuple[int, int]:
        return tuple(int(part) for part in text.split(".")[:2])

    if version(triton.__version__) < (3, 7) and version(numpy.__version__) >= (2, 4):
        pytest.skip(f"Triton {triton.__version__}'s CPU interpreter fails under numpy {numpy.__version__}")
    return subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "TRITON_INTERPRET": "1", **env})


def test_the_model_boundary_moves_every_prompt_tensor(prompt_inputs):
    """Whatever the prompt builder made (all on the CPU) reaches the model's device, ids as int64:
    the bug that stopped every command on CUDA was input_ids and mm_token_type_ids left behind."""
    inputs = prompt_inputs("mixed")
    moved = on_model_device(torch.device("meta"), input_ids=inputs["input_ids"].int(),
                            types=inputs["mm_token_type_ids"], attention_mask=inputs["attention_mask"],
                            pixel_values=inputs["pixel_values"], pixel_values_videos=inputs["pixel_values_videos"],
                            position_ids=torch.zeros(3, 1, 4, dtype=torch.int32))
    assert all(t.device.type == "meta" for t in moved.values())
    assert moved["input_ids"].dtype == moved["types"].dtype == moved["position_ids"].dtype == torch.int64
    assert on_model_device(torch.device("meta"), pixel_values=None) == {"pixel_values": None}


def test_prefill_and_forward_route_their_inputs_through_the_boundary(tiny_folder, prompt_inputs, monkeypatch):
    """Each entry point that takes a caller's tensors hands every one of them to on_model_device
    (ids, token types, positions, pixels), so no tensor can reach the weights from elsewhere."""
    import glmv_cli.model.glm4v as glm4v

    glm = glmv_cli.load(tiny_folder, device="cpu", dtype="float32")
    seen = []
    real = glm4v.on_model_device
    monkeypatch.setattr(glm4v, "on_model_device", lambda device, **t: seen.append(set(t)) or real(device, **t))
    inputs = model_kwargs(prompt_inputs("mixed"))
    glm.model(**inputs)
    glm.model.language_model.setup_cache(1, inputs["input_ids"].shape[1] + 1)
    glm.model.prefill(**inputs)
    glm.model.language_model.drop_cache()
    wanted = {"input_ids", "types", "position_ids", "pixel_values", "pixel_values_videos"}
    assert len(seen) == 2 and all(wanted <= names for names in seen)


@pytest.fixture(scope="module")
def mixed_file(tmp_path_factory):
    """A safetensors file of mixed dtypes and sizes (one empty, one odd-sized)."""
    g = torch.Generator().manual_seed(0)
    state = {
        "a.weight": torch.randn(37, 53, generator=g).to(torch.bfloat16),
        "b.bias": torch.randn(11, generator=g),
        "c.ids": torch.randint(0, 1000, (7, 3), generator=g),
        "d.half": torch.randn(5, 9, generator=g).to(torch.float16),
        "e.empty": torch.zeros(0, 4),
        "f.mask": torch.rand(13, generator=g) > 0.5,
    }
    path = tmp_path_factory.mktemp("stream") / "x.safetensors"
    save_file(state, str(path))
    return path, state


@pytest.mark.parametrize("chunk, readers", [(7, 1), (64, 3), (1000, 2), (1 << 20, 4)])
def test_streaming_in_chunks_lands_every_byte(mixed_file, chunk, readers):
    """Chunks that cut tensors anywhere (7 bytes) or hold the whole file; destinations of the
    file's dtype get its bytes, others (bf16 -> float32, f16 -> bf16) a converted copy."""
    path, state = mixed_file
    entries = read_header(path)
    wanted = {"a.weight": torch.float32, "d.half": torch.bfloat16}
    outs = {k: torch.full(v.shape, 7, dtype=wanted.get(k, v.dtype)) for k, v in state.items()}
    device = torch.device("cpu")
    ring = host_ring(device, chunk_bytes=chunk, readers=readers)
    read = []
    stream_into(path, [(entries[k], outs[k]) for k in state], device, ring, read.append)
    for k, v in state.items():
        assert torch.equal(outs[k], v.to(outs[k].dtype)), k
    assert sum(read) == sum(e.nbytes for e in entries.values())  # (what a loading meter is told)
    # tensors left to another reader (int8's, quantized as read) lie between the chunks' ends: the
    # bytes told are those of the tensors streamed
    read.clear()
    stream_into(path, [(entries[k], outs[k]) for k in ("a.weight", "d.half", "f.mask")], device, ring, read.append)
    assert sum(read) == sum(entries[k].nbytes for k in ("a.weight", "d.half", "f.mask"))


@pytest.mark.parametrize("chunk, readers", [(7, 1), (64, 3), (1000, 2), (1 << 20, 4)])
def test_reading_into_cpu_tensors_from_threads_lands_every_byte(mixed_file, tmp_path, monkeypatch, chunk, readers):
    """read_parallel, the CPU loader: pieces that cut tensors anywhere, from several threads; the
    file's dtype lands as its bytes, others (bf16 -> float32, f16 -> bf16, a scalar) converted a
    block of rows at a time."""
    import glmv_cli.streaming as streaming

    path, state = mixed_file
    scalar = tmp_path / "scalar.safetensors"
    save_file({"s": torch.tensor(2.5, dtype=torch.bfloat16)}, str(scalar))
    monkeypatch.setattr(streaming, "CHUNK_BYTES", chunk)
    entries = read_header(path)
    wanted = {"a.weight": torch.float32, "d.half": torch.bfloat16}
    outs = {k: torch.full(v.shape, 7, dtype=wanted.get(k, v.dtype)) for k, v in state.items()}
    read = []
    streaming.read_parallel(path, [(entries[k], outs[k]) for k in state], readers=readers, read=read.append)
    for k, v in state.items():
        assert torch.equal(outs[k], v.to(outs[k].dtype)), k
    assert sum(read) == sum(e.nbytes for e in entries.values())  # (what a loading meter is told)
    out = torch.zeros((), dtype=torch.float32)
    streaming.read_parallel(scalar, [(read_header(scalar)["s"], out)], readers=readers)
    assert out.item() == 2.5


def test_reading_a_file_cut_short_names_it(mixed_file, tmp_path):
    """The file shrank after its header was read (a download still being written): the reader that
    meets its end raises, and read_parallel passes that one error on."""
    import glmv_cli.streaming as streaming

    path, state = mixed_file
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(path.read_bytes())
    entries = read_header(cut)
    cut.write_bytes(path.read_bytes()[:entries["a.weight"].offset + 100])
    outs = {k: torch.empty(v.shape, dtype=v.dtype) for k, v in state.items()}
    with pytest.raises(ModelError, match=r"cut.safetensors ended at byte \d+; re-download it"):
        streaming.read_parallel(cut, [(entries[k], outs[k]) for k in state], readers=2)


def test_streaming_a_checkpoint_equals_reading_it(tiny_folder):
    expected = load_file(str(tiny_folder / "model.safetensors"))
    entries = read_header(tiny_folder / "model.safetensors")
    outs = {k: torch.empty_like(v) for k, v in expected.items()}
    stream_into(tiny_folder / "model.safetensors", [(entries[k], outs[k]) for k in outs], torch.device("cpu"),
                host_ring(torch.device("cpu"), chunk_bytes=4096, readers=3))
    assert all(torch.equal(outs[k], expected[k]) for k in expected)


def test_int8_through_the_streaming_ring_equals_reading_it(tiny_folder, monkeypatch):
    """The accelerator path of int8 loading (row blocks streamed through the ring, quantized where
    they land), run on the CPU with blocks that cut the weights mid-tensor, gives the layer the
    plain reader's path gives it."""
    import glmv_cli.loading as loading
    from glmv_cli.model.quant import Int8Embedding, Int8Linear
    from glmv_cli.safetensors_io import TensorReader

    path = tiny_folder / "model.safetensors"
    entries = read_header(path)
    device = torch.device("cpu")
    monkeypatch.setattr(loading, "QUANTIZE_STREAM_BYTES", 1000)  # a few rows per block
    names = ["model.language_model.layers.0.mlp.gate_up_proj.weight", "model.language_model.embed_tokens.weight"]
    with TensorReader(path) as reader:
        for name in names:
            entry = entries[name]
            rows, cols = entry.shape
            plain, streamed = ((Int8Embedding(rows, cols) if "embed" in name else Int8Linear(cols, rows))
                               for _ in range(2))
            loading.read_quantized(reader, entry, plain, device)
            loading.read_quantized(reader, entry, streamed, device, host_ring(device, chunk_bytes=512, readers=2))
            assert torch.equal(plain.weight, streamed.weight) and torch.equal(plain.scales, streamed.scales), name
            assert plain.weight.abs().max() == 127


INTERPRETED_KERNEL_CHECK = textwrap.dedent("""
    import torch
    from glmv_cli.kernels.int8_gemv import int8_gemv
    from glmv_cli.model.quant import quantize_int8
    g = torch.Generator().manual_seed(0)
    worst = 0.0
    for M, N, K, bias in [(1, 40, 96, True), (3, 100, 300, False), (1, 70, 1000, True), (8, 17, 5, True)]:
        w = torch.randn(N, K, generator=g)
        w[1] *= 50  # one large row: scales are per row
        q, s = quantize_int8(w)
        x = torch.randn(M, K, generator=g)
        b = torch.randn(N, generator=g) if bias else None
        y = int8_gemv(x, q, s, b)
        assert y.shape == (M, N) and y.dtype == x.dtype
        ref = x.double() @ (q.double() * s.double()[:, None]).T + (b.double() if bias else 0)
        worst = max(worst, float(((y.double() - ref).abs() / ref.abs().max()).max()))
    from glmv_cli.kernels.int8_gemv import CANDIDATES
    w, x = torch.randn(37, 2100, generator=g), torch.randn(1, 2100, generator=g)
    q, s = quantize_int8(w)
    ref = x.double() @ (q.double() * s.double()[:, None]).T
    for config in CANDIDATES:  # every block shape the GPU profile times computes the same product
        y = int8_gemv(x, q, s, config=config)
        worst = max(worst, float(((y.double() - ref).abs() / ref.abs().max()).max()))
    # tuning: every configuration tried computes the product; the fastest is kept, once per shape
    from glmv_cli.kernels import int8_gemv as module
    fake = iter([5.0, 3.0, 4.0, 9.0])
    tried = []
    def timer(run):
        tried.append(run())
        return next(fake)
    candidates = [(2, 64, 1), (8, 512, 4), (4, 1024, 2)]
    picked = module.tuned_config(x, q, s, None, candidates=candidates, timer=timer)
    assert len(tried) == 4 and picked == candidates[0], (picked, len(tried))  # the guess first, then these
    assert module.tuned_config(x, q, s, None, candidates=candidates, timer=timer) == picked and len(tried) == 4
    for y in tried:
        worst = max(worst, float(((y.double() - ref).abs() / ref.abs().max()).max()))
    print(worst)
""")


def test_int8_triton_kernel_is_the_dequantized_product():
    """The kernel, run by Triton's CPU interpreter: shapes with tails on both axes, with and
    without bias, 1 to 8 rows; float32 within 1e-6 of the float64 dequantized product."""
    done = interpreted(INTERPRETED_KERNEL_CHECK)
    assert done.returncode == 0, done.stderr
    assert float(done.stdout) < 1e-6


INTERPRETED_NORM_CHECK = textwrap.dedent("""
    import torch
    from glmv_cli.kernels.rms_norm import add_rms_norm, rms_norm
    from glmv_cli.model.layers import RMSNorm
    g = torch.Generator().manual_seed(0)
    for dtype in (torch.float16, torch.float32):
        for shape in [(1, 1, 4096), (3, 7, 1536), (2, 100)]:
            norm = RMSNorm(shape[-1], 1e-5)
            norm.weight.data = 1 + 0.1 * torch.randn(shape[-1], generator=g)
            norm = norm.to(dtype)
            x = (3 * torch.randn(*shape, generator=g)).to(dtype)
            with torch.no_grad():
                y, ref = rms_norm(x, norm.weight, 1e-5), norm(x)
            assert y.dtype == dtype and y.shape == x.shape
            if dtype == torch.float16:
                assert torch.equal(y, ref), (shape, (y - ref).abs().max())
            else:
                torch.testing.assert_close(y, ref, rtol=1e-6, atol=1e-6)
            # the seam: residual + norm1(branch), then norm2 of that sum, against the three modules
            norm2 = RMSNorm(shape[-1], 1e-6)
            norm2.weight.data = 1 + 0.1 * torch.randn(shape[-1], generator=g)
            norm2 = norm2.to(dtype)
            a = (2 * torch.randn(*shape, generator=g)).to(dtype)
            with torch.no_grad():
                r, z = add_rms_norm(a, x, norm.weight, 1e-5, norm2.weight, 1e-6)
                r_ref = x + norm(a)
                z_ref = norm2(r_ref)
            if dtype == torch.float16:  # the same roundings; a sum of squares in another order can
                for out, ref in ((r, r_ref), (z, z_ref)):  # move a rare element by one unit
                    assert (out == ref).float().mean() > 0.99, shape
                    torch.testing.assert_close(out, ref, rtol=2**-10, atol=2**-10)
            else:
                torch.testing.assert_close(r, r_ref, rtol=1e-6, atol=1e-6)
                torch.testing.assert_close(z, z_ref, rtol=1e-5, atol=1e-5)
    print("ok")
""")


def test_rms_norm_triton_kernel_rounds_as_the_reference():
    """RMSNorm and the fused seam (add_rms_norm): float16 (almost) bit for bit, float32 within 1e-6
    (sum order). bfloat16 is checked on CUDA only: Triton's CPU interpreter truncates float32 ->
    bfloat16 where the GPU rounds to nearest."""
    done = interpreted(INTERPRETED_NORM_CHECK)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


INTERPRETED_ROPE_CHECK = textwrap.dedent("""
    import torch
    from glmv_cli.kernels.rope import rope_heads
    from glmv_cli.model.rope import apply_text_rope, inverse_frequencies, text_rope
    g = torch.Generator().manual_seed(0)
    for dtype in (torch.float32, torch.float16):
        for B, S, NH, D, R, sections in [(1, 1, 20, 128, 64, (8, 12, 12)), (2, 3, 4, 64, 32, (4, 6, 6))]:
            qkv = torch.randn(B, S, NH + 3, D, generator=g).to(dtype)  # q and k heads, then v's
            cos, sin = text_rope(torch.randint(0, 500, (3, B, S), generator=g), inverse_frequencies(R, 1e4),
                                 sections, dtype)
            y = rope_heads(qkv[:, :, :NH], cos, sin)
            assert torch.equal(y, apply_text_rope(qkv[:, :, :NH].transpose(1, 2), cos, sin)), (dtype, B, S)
    print("ok")
""")


def test_rope_triton_kernel_equals_the_torch_rotation():
    """Bit for bit in float32 and float16, reading heads from a strided q/k/v output."""
    done = interpreted(INTERPRETED_ROPE_CHECK)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


INTERPRETED_ATTENTION_CHECK = textwrap.dedent("""
    import torch
    import torch.nn.functional as F
    from glmv_cli.kernels.decode_attention import decode_attention
    g = torch.Generator().manual_seed(0)
    worst = 0.0
    for B, KV, G, D, L, written in [(1, 2, 16, 128, 300, 200), (1, 2, 4, 64, 256, 256), (2, 1, 8, 32, 130, 1)]:
        q = torch.randn(B, KV, G, D, generator=g)
        k, v = torch.randn(B, KV, L, D, generator=g), torch.randn(B, KV, L, D, generator=g)
        mask = torch.zeros(1, 1, 1, L).masked_fill(torch.arange(L).view(1, 1, 1, L) >= written, float("-inf"))
        y = decode_attention(q, k, v, mask)
        worst = max(worst, float((y - F.scaled_dot_product_attention(q, k, v, attn_mask=mask)).abs().max()))
    print(worst)
""")


def test_split_decode_attention_is_attention():
    """The split-cache kernel (interpreted): pieces that end mid-cache, pieces wholly masked, one
    written position, against torch's attention in float32."""
    done = interpreted(INTERPRETED_ATTENTION_CHECK)
    assert done.returncode == 0, done.stderr
    assert float(done.stdout) < 1e-5


INTERPRETED_MODEL_CHECK = textwrap.dedent("""
    import os, sys
    import torch
    import glmv_cli
    import glmv_cli.kernels.rms_norm as norm_kernels
    import glmv_cli.kernels.rope as rope_kernels
    import glmv_cli.kernels.decode_attention as attention
    import glmv_cli.kernels.swiglu as swiglu_kernels
    from glmv_cli.generate import StaticStep

    calls = {}
    for module, name in [(rope_kernels, "rope_into_cache"), (rope_kernels, "rope_heads"), (norm_kernels, "rms_norm"),
                         (norm_kernels, "add_rms_norm"), (swiglu_kernels, "swiglu"), (attention, "decode_attention")]:
        def counted(*args, _f=getattr(module, name), _n=name, **kwargs):
            calls[_n] = calls.get(_n, 0) + 1
            return _f(*args, **kwargs)
        setattr(module, name, counted)
    model = glmv_cli.load(sys.argv[1], device="cpu", dtype="float32").model
    ids = torch.arange(100, 120)[None]

    def run():
        step = StaticStep(model, model.decode_step)
        step.begin(32)
        logits, delta = model.prefill(input_ids=ids)
        out, pos = [logits], ids.shape[1]
        for _ in range(4):
            logits = step(logits.argmax(-1, keepdim=True), torch.tensor([pos]), torch.tensor([delta]))
            out.append(logits.clone())
            pos += 1
        more = torch.arange(130, 140)[None]  # a follow-up prompt resumed after the first (the prompt cache)
        out.append(model.prefill(input_ids=torch.cat([ids, more], 1), start=ids.shape[1])[0])
        step.end()
        return torch.cat(out)

    with torch.no_grad():
        kernels = run()
        os.environ["TRITON_INTERPRET"] = "0"  # the kernels were made interpreted; now the torch path
        plain = run()
    print(float((kernels - plain).abs().max() / plain.abs().max()), sorted(calls.items()))
""")


def test_the_model_wires_its_kernels_as_its_torch_path(tiny_folder):
    """The whole tiny model, prefill, four static decode steps and a prefill resumed after the
    first prompt, with every Triton kernel on (run by the interpreter on the CPU: RMSNorm, the fused
    seams, rope for the prompt, rope with the KV-cache write, the SwiGLU activation and the split
    decode attention for each step) gives the torch path's logits (float32)."""
    done = interpreted(INTERPRETED_MODEL_CHECK, str(tiny_folder), timeout=600, GLMV_DECODE_ATTENTION="split")
    assert done.returncode == 0, done.stderr
    worst, calls = done.stdout.split(" ", 1)
    assert float(worst) < 1e-5, done.stdout
    for name in ("rope_into_cache", "rope_heads", "add_rms_norm", "rms_norm", "swiglu", "decode_attention"):
        assert f"'{name}'" in calls, calls


def test_decode_step_per_device(tiny_folder, monkeypatch):
    """CPU: eager decoding unless --compile; a CUDA device would get a graph (not built here)."""
    from glmv_cli.cuda_graph import graphs_enabled
    from glmv_cli.generate import StaticStep

    glm = glmv_cli.load(tiny_folder, device="cpu", dtype="float32")
    assert glm.decode_step() is None
    assert isinstance(glm.decode_step(compile=True), StaticStep)
    assert glm.decode_step(compile=True) is glm.decode_step(compile=True)  # made once
    assert graphs_enabled(torch.device("cuda")) and not graphs_enabled(torch.device("cpu"))
    monkeypatch.setenv("GLMV_CUDA_GRAPHS", "0")
    assert not graphs_enabled(torch.device("cuda"))


def test_a_failed_graph_capture_falls_back_to_the_static_step(tiny_folder, prompt_inputs, monkeypatch, caplog):
    """If some operation cannot be captured on a user's GPU, generation still runs (eagerly, with a
    warning) instead of every command failing: simulated on the CPU."""
    from glmv_cli.cuda_graph import CudaGraphStep

    glm = glmv_cli.load(tiny_folder, device="cpu", dtype="float32")
    step = CudaGraphStep(glm.model)

    def fail(length):
        glm.model.language_model.setup_cache(1, length)  # as a capture that fails half way
        raise RuntimeError("operation not permitted when stream is capturing\nmore")

    monkeypatch.setattr(step, "_capture", fail)
    inputs = model_kwargs(prompt_inputs("image"))
    expected = list(glm.generate(inputs, max_new_tokens=12, ignore_stop=True))
    with caplog.at_level("WARNING"):
        assert list(Generation(glm.model, inputs, max_new_tokens=12, step=step)) == expected
        assert list(Generation(glm.model, inputs, max_new_tokens=12, step=step)) == expected
    assert step.failed and step.graph is None
    assert [r.message for r in caplog.records].count(
        "could not capture the decode step as a CUDA graph (operation not permitted when stream is capturing); "
        "decoding without it, slower (GLMV_CUDA_GRAPHS=0 skips the attempt)") == 1  # said once
    assert glm.model.language_model.caches is None


def test_running_out_of_memory_in_a_capture_does_not_turn_the_graphs_off(tiny_folder, prompt_inputs, monkeypatch):
    """A request whose KV cache does not fit fails (the caller reports it), but the step is not
    marked failed: one oversized request must not leave a server decoding without graphs for good."""
    from glmv_cli.cuda_graph import CudaGraphStep

    glm = glmv_cli.load(tiny_folder, device="cpu", dtype="float32")
    step = CudaGraphStep(glm.model)

    def fail(length):
        glm.model.language_model.setup_cache(1, length)
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 3.00 GiB.")

    monkeypatch.setattr(step, "_capture", fail)
    with pytest.raises(torch.cuda.OutOfMemoryError):
        list(Generation(glm.model, model_kwargs(prompt_inputs("text")), max_new_tokens=4, step=step))
    assert not step.failed and step.graph is None and glm.model.language_model.caches is None


@pytest.mark.parametrize("capability, dtype, compiles", [
    ((7, 5), torch.bfloat16, False), ((7, 0), torch.bfloat16, False), ((7, 5), torch.float16, True),
    ((7, 5), torch.float32, True), ((8, 0), torch.bfloat16, True), ((9, 0), torch.bfloat16, True),
    ((6, 0), torch.float32, False), ((6, 1), torch.float16, False)])
def test_triton_kernels_take_bfloat16_only_on_gpus_that_compile_it(monkeypatch, capability, dtype, compiles):
    """On a T4, V100 or RTX 20xx (compute capability under 8.0) ptxas refuses Triton's bfloat16:
    every kernel (norms, rotary, SwiGLU, int8 and int4 products, split attention) then leaves
    bfloat16 tensors to torch, and float16 or float32 ones stay with Triton; under 7.0 (a P100, a
    GTX 10xx) Triton compiles nothing."""
    from types import SimpleNamespace

    from glmv_cli import kernels
    from glmv_cli.model import layers

    monkeypatch.setattr(kernels, "cuda_capability", lambda device: capability)
    monkeypatch.setattr(layers, "fused_kernels", lambda: True)
    on_gpu = SimpleNamespace(is_cuda=True, dtype=dtype, device=torch.device("cuda", 0))
    assert kernels.triton_compiles(dtype, on_gpu.device) is compiles
    assert layers.kernels_for(on_gpu) is compiles


def test_a_gpu_without_bfloat16_says_so_and_turns_compile_off(tiny_folder, monkeypatch, caplog):
    """A bfloat16 model on compute capability 7.5: one note naming the card, what is emulated and
    what avoids it; --compile (inductor writes Triton kernels) off with a note; none on an 8.6 card
    or for float32."""
    import glmv_cli.api as api
    from glmv_cli import kernels
    from glmv_cli.generate import StaticStep
    from glmv_cli.loading import emulated_note

    cuda = torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla T4")
    monkeypatch.setattr(kernels, "cuda_capability", lambda device: (7, 5))
    note = emulated_note(cuda, torch.bfloat16)
    assert note.startswith("Tesla T4 has no bfloat16 arithmetic (compute capability 7.5")
    assert "--dtype float32" in note and "float16 is known to overflow" in note
    assert emulated_note(cuda, torch.float32) is None and emulated_note(torch.device("cpu"), torch.bfloat16) is None

    monkeypatch.setattr(api, "compiled_step", lambda model: model.decode_step)  # (what torch.compile would wrap)
    glm = glmv_cli.load(tiny_folder, device="cpu", dtype="float32")
    on_t4 = api.Glmv(glm.model, glm.folder, cuda, torch.bfloat16, glm.stop_ids)
    with caplog.at_level("WARNING", logger="glmv_cli.api"):
        assert on_t4.decode_step(compile=True, graph=False) is None  # eager: nothing to compile
    assert "--compile is off" in caplog.text
    monkeypatch.setattr(kernels, "cuda_capability", lambda device: (6, 0))
    assert emulated_note(cuda, torch.float32) == ("Tesla T4 (compute capability 6.0) is older than Triton supports "
                                                  "(7.0): running without glmv's Triton kernels or --compile")
    monkeypatch.setattr(kernels, "cuda_capability", lambda device: (8, 6))
    assert emulated_note(cuda, torch.bfloat16) is None
    on_3090 = api.Glmv(glm.model, glm.folder, cuda, torch.bfloat16, glm.stop_ids)
    assert isinstance(on_3090.decode_step(compile=True, graph=False), StaticStep)
