"""The model on a GPU (marked `gpu`: skipped without CUDA; GLMV_GPU_TEST_DEVICE=cpu dry-runs the
logic): parity with transformers on the device (float32 with TF32 off on both sides, bfloat16 by
top-1 agreement and cosine), CUDA-graph, eager and compiled decoding giving the same greedy
tokens, graphs reused between requests, batched rows (glmv serve --parallel), streamed loading
landing the same weights as CPU loading, int8 and int4 through their Triton kernels, and memory:
the predicted weight bytes against the device's counters, a full GPU refusing a load and failing
one question alone."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import glmv_cli
from tests.model.conftest import agreement, extended, model_kwargs
from tests.reference import building_block_logits, reference_model

pytestmark = pytest.mark.gpu
PROMPTS = ("text", "image", "video", "mixed")


@pytest.fixture(scope="module", autouse=True)
def no_tf32():
    """Exact float32 on both sides: TF32 matmuls and convolutions would differ at 1e-3."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def needs_cuda(device):
    if device.type != "cuda":
        pytest.skip("CUDA graphs and Triton kernels exist on CUDA only")


@pytest.fixture(scope="module")
def ours(tiny_folder, gpu):
    return glmv_cli.load(tiny_folder, device=gpu, dtype="float32")


@pytest.fixture(scope="module")
def ref_on_device(tiny_folder, gpu):
    return reference_model(tiny_folder, device=gpu).to(gpu)


def on(device, inputs: dict) -> dict:
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in inputs.items()}


@pytest.mark.parametrize("name", PROMPTS)
def test_float32_logits_match_the_reference_on_the_device(ours, ref_on_device, prompt_inputs, gpu, name):
    inputs = prompt_inputs(name)
    expected = building_block_logits(ref_on_device, on(gpu, inputs))
    got = ours.model(**model_kwargs(inputs))  # CPU tensors in: the model moves them
    assert got.device.type == gpu.type
    diff = (got - expected).abs().max().item()
    assert diff <= 1e-3, diff


def test_bfloat16_agrees_with_the_float32_reference(tiny_folder, ref_on_device, prompt_inputs, gpu):
    glm = glmv_cli.load(tiny_folder, device=gpu, dtype="bfloat16")
    agree = total = 0
    cosines = []
    for name in PROMPTS:
        inputs = prompt_inputs(name)
        a = building_block_logits(ref_on_device, on(gpu, inputs))[0].float()
        b = glm.model(**model_kwargs(inputs))[0].float()
        agree += int((a.argmax(-1) == b.argmax(-1)).sum())
        total += a.shape[0]
        cosines.append(F.cosine_similarity(a, b, dim=-1).min().item())
    assert agree / total >= 0.95, agree / total
    assert min(cosines) >= 0.99, cosines


def tokens(glm, inputs, n=24, **kw) -> list[int]:
    return list(glm.generate(inputs, max_new_tokens=n, ignore_stop=True, **kw))


@pytest.mark.parametrize("name", ["image", "mixed"])
def test_graph_eager_and_compiled_decoding_give_the_same_tokens(ours, prompt_inputs, gpu, name):
    needs_cuda(gpu)
    inputs = model_kwargs(prompt_inputs(name))
    eager = tokens(ours, inputs, graph=False)
    assert tokens(ours, inputs) == eager  # the default on CUDA: the graph
    assert tokens(ours, inputs, compile=True) == eager  # compiled, inside the graph


def test_the_graph_is_captured_once_per_cache_length(ours, prompt_inputs, gpu):
    needs_cuda(gpu)
    inputs = model_kwargs(prompt_inputs("image"))
    eager = tokens(ours, inputs, n=30, graph=False)
    step = ours.decode_step()
    assert tokens(ours, inputs, n=30) == eager
    graph, cache = step.graph, step.caches
    assert tokens(ours, inputs, n=30) == eager  # another request of the same size: replayed
    assert step.graph is graph and step.caches is cache
    longer = tokens(ours, inputs, n=400)  # another bucket: captured again, still right
    assert step.graph is not graph and longer == tokens(ours, inputs, n=400, graph=False)
    assert ours.model.language_model.caches is None  # handed back after each request


@pytest.mark.parametrize("name", ["image", "video"])
def test_drafts_checked_in_cuda_graphs_change_no_token(ours, prompt_inputs, gpu, name):
    """GLMV_SPECULATE on CUDA: a token and its drafts in a graph of their own per width, over the
    one-token graph's cache (lookup.py): the tokens of eager decoding without drafts."""
    needs_cuda(gpu)
    inputs = model_kwargs(prompt_inputs(name))
    want = tokens(ours, inputs, n=64, graph=False, draft=0)
    gen = ours.generate(inputs, max_new_tokens=64, ignore_stop=True, draft=3)
    assert list(gen) == want and gen.accepted > 0  # (random weights repeat themselves)
    assert gen._drafts.cost.one > 0 and gen._drafts.cost.checking > 0  # both kinds timed by CUDA events
    step = ours.decode_step()
    assert step.checks and all(c is not None for c in step.checks.values())  # captured, not eager
    assert tokens(ours, inputs, n=64) == want  # the one-token graph after them: the cache still right


@pytest.mark.parametrize("between", [False, True])
@pytest.mark.parametrize("new_tokens", [24, 400])  # the first request's cache length, and a longer one
def test_a_follow_up_through_the_graph_reuses_the_prompt_cache(ours, prompt_inputs, follow_up, gpu, new_tokens,
                                                               between):
    """The graph's cache holds the last request's keys and values; a follow-up runs only its new
    tokens, in the kept cache or (another length: captured again) in a copy, or from a snapshot when
    another request came between, and gets the tokens of an eager run from scratch (a CPU dry run:
    eager every time)."""
    first = model_kwargs(prompt_inputs("image"))
    second = extended(first, follow_up)
    sampled = dict(temperature=1.5, seed=3)  # random weights: greedy repeats one token
    want = tokens(ours, second, n=new_tokens, graph=False, **sampled)
    tokens(ours, first, n=24, reuse=True, **sampled)
    if between:
        tokens(ours, model_kwargs(prompt_inputs("video")), n=24, reuse=True, **sampled)
    gen = ours.generate(second, max_new_tokens=new_tokens, ignore_stop=True, reuse=True, **sampled)
    assert list(gen) == want and gen.cached_tokens == first["input_ids"].shape[1]


def test_batched_rows_equal_each_row_alone_on_the_device(ours, prompt_inputs):
    """glmv serve --parallel's step on the device: rows at their own positions in their own caches
    give the logits each gets alone (float32, TF32 off)."""
    from tests.model.test_batched_decode import alone, prefilled

    runs = [prefilled(ours, model_kwargs(prompt_inputs(n)), 300) for n in ("text", "image", "video")]
    twins = [prefilled(ours, model_kwargs(prompt_inputs(n)), 300) for n in ("text", "image", "video")]
    tokens = torch.tensor([[int(r[1].argmax())] for r in runs])
    batched = ours.model.decode_rows(tokens, [r[3] for r in runs], [r[2] for r in runs], [r[0] for r in runs])
    for b, (caches, _, delta, n) in enumerate(twins):
        single = alone(ours, caches, int(tokens[b]), n, delta)
        torch.testing.assert_close(batched[b:b + 1], single, rtol=1e-4, atol=1e-4)


def test_generations_decoded_together_in_cuda_graphs_yield_what_each_yields_alone(ours, prompt_inputs, gpu):
    """glmv serve --parallel on CUDA: the steps of a set of generations replayed from the graph
    captured for that set (batch_graphs.py) give each the tokens it gets alone (float32)."""
    needs_cuda(gpu)
    from glmv_cli.batch_graphs import RowGraphs
    from glmv_cli.batching import DecodeBatcher
    from tests.model.test_batched_generation import concurrently, generation, jobs

    todo = jobs(prompt_inputs)
    alone = [list(generation(ours, job)) for job in todo]
    graphs = RowGraphs(ours.model)
    batcher = DecodeBatcher(ours.model, rows=4, wait_s=1.0, graphs=graphs)
    assert concurrently(lambda i: generation(ours, todo[i], batcher=batcher), len(todo)) == alone
    assert not graphs.failed and graphs.captures >= 1 and batcher.steps > 3 * graphs.captures


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_streamed_loading_lands_the_cpu_weights(tiny_folder, gpu, dtype):
    cpu = glmv_cli.load(tiny_folder, device="cpu", dtype=dtype).model.state_dict()
    dev = glmv_cli.load(tiny_folder, device=gpu, dtype=dtype).model.state_dict()
    assert set(cpu) == set(dev)
    assert all(torch.equal(dev[k].cpu(), cpu[k]) for k in cpu)


def test_int8_kernel_is_the_dequantized_product(gpu):
    """9B's decode shapes and a ragged one; each shape's blocks tuned on its first product."""
    needs_cuda(gpu)
    from glmv_cli.kernels.int8_gemv import TUNED, int8_gemv
    from glmv_cli.model.quant import quantize_int8

    g = torch.Generator(device=gpu).manual_seed(0)
    for M, N, K in [(1, 4608, 4096), (1, 27392, 4096), (1, 4096, 13696), (3, 1000, 333)]:
        q, s = quantize_int8(torch.randn(N, K, device=gpu, generator=g))
        x = torch.randn(M, K, device=gpu, generator=g, dtype=torch.bfloat16)
        bias = torch.randn(N, device=gpu, generator=g, dtype=torch.bfloat16)
        y = int8_gemv(x, q, s, bias).float()
        ref = x.double() @ (q.double() * s.double()[:, None]).T + bias.double()
        rel = ((y.double() - ref).norm() / ref.norm()).item()
        assert rel < 1e-2 and not y.isnan().any(), rel
        assert any(key[:2] == (N, K) for key in TUNED), (N, K)  # measured, not guessed


def test_int8_on_the_device_agrees_with_float32(tiny_folder, ours, prompt_inputs, gpu):
    glm8 = glmv_cli.load(tiny_folder, device=gpu, dtype="float32", quantize="int8")
    agree, least = agreement(ours, glm8, prompt_inputs)
    assert agree >= 0.95 and least > 0.99, (agree, least)
    inputs = model_kwargs(prompt_inputs("image"))
    decoded = tokens(glm8, inputs, n=16)  # the default step: through the kernel, in a graph on CUDA
    assert decoded == tokens(glm8, inputs, n=16, graph=False)


def test_int4_kernel_is_the_dequantized_product(gpu):
    """9B's decode shapes (groups of 128; 13696 columns end in a partial block) and a ragged one."""
    needs_cuda(gpu)
    from glmv_cli.kernels.int4_gemv import TUNED, int4_gemv
    from glmv_cli.model.quant_int4 import dequantize_int4, quantize_int4

    g = torch.Generator(device=gpu).manual_seed(0)
    for M, N, K, group in [(1, 4096, 4096, 128), (1, 27392, 4096, 128), (1, 4096, 13696, 128), (3, 1000, 352, 32)]:
        packed, scales = quantize_int4(torch.randn(N, K, device=gpu, generator=g), group, torch.bfloat16)
        x = torch.randn(M, K, device=gpu, generator=g, dtype=torch.bfloat16)
        bias = torch.randn(N, device=gpu, generator=g, dtype=torch.bfloat16)
        y = int4_gemv(x, packed, scales, bias).float()
        ref = x.double() @ dequantize_int4(packed, scales, torch.float64).T + bias.double()
        rel = ((y.double() - ref).norm() / ref.norm()).item()
        assert rel < 1e-2 and not y.isnan().any(), rel
        assert any(key[:2] == (N, K) for key in TUNED), (N, K)  # measured, not guessed


def test_int4_on_the_device_stays_close_to_float32(tiny_folder, ours, prompt_inputs, gpu):
    """As on the CPU (tests/model/test_int4.py): most greedy choices kept on these random weights;
    the decode step through the Triton kernel in a CUDA graph gives the eager step's tokens."""
    from glmv_cli.model.quant_int4 import Int4Linear

    glm4 = glmv_cli.load(tiny_folder, device=gpu, dtype="float32", quantize="int4")
    assert isinstance(glm4.model.language_model.layers[0].mlp.down_proj, Int4Linear)
    agree, least = agreement(ours, glm4, prompt_inputs)
    assert agree >= 0.5 and least > 0.9, (agree, least)
    inputs = model_kwargs(prompt_inputs("image"))
    assert tokens(glm4, inputs, n=16) == tokens(glm4, inputs, n=16, graph=False)
    if gpu.type == "cuda":
        from glmv_cli.kernels import int4_gemv

        assert int4_gemv.usable()  # decoded through the kernel, not its fallback


def test_a_stored_int4_checkpoint_loads_on_the_device_as_quantizing_there(tiny_folder, prompt_inputs, gpu, tmp_path):
    """glmv quantize's folder, streamed to the device as stored: the logits of quantizing while
    loading there (in bfloat16, the real checkpoints' dtype, whose scales the file holds)."""
    from glmv_cli.quantized import save_quantized

    save_quantized(tiny_folder, tmp_path / "int4", "int4")
    stored = glmv_cli.load(tmp_path / "int4", device=gpu, dtype="bfloat16")
    fly = glmv_cli.load(tiny_folder, device=gpu, dtype="bfloat16", quantize="int4")
    inputs = model_kwargs(prompt_inputs("image"))
    torch.testing.assert_close(stored.model(**inputs), fly.model(**inputs), rtol=1e-3, atol=1e-3)


def assert_rounds_like(out: torch.Tensor, ref: torch.Tensor, unit: float, bitwise: bool) -> None:
    """Within `unit` (relative) of torch's result everywhere; with `bitwise`, the very same bits
    for 99% of the elements (the same roundings; a sum in another order moves a rare one)."""
    assert out.shape == ref.shape and ((out.float() - ref.float()).abs() <= unit * ref.float().abs() + 1e-5).all()
    if bitwise:
        assert (out == ref).float().mean() > 0.99


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_rms_norm_kernel_matches_torch_on_the_device(gpu, dtype):
    needs_cuda(gpu)
    from glmv_cli.kernels.rms_norm import rms_norm
    from glmv_cli.model.layers import RMSNorm

    g = torch.Generator(device=gpu).manual_seed(0)
    norm = RMSNorm(4096, 1e-5).to(gpu)
    norm.weight.data = 1 + 0.1 * torch.randn(4096, device=gpu, generator=g)
    norm = norm.to(dtype)
    x = (3 * torch.randn(5, 4096, device=gpu, generator=g)).to(dtype)
    with torch.no_grad():
        y = rms_norm(x, norm.weight, 1e-5)
        x32 = x.float()
        ref = norm.weight * (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + 1e-5)).to(dtype)
    unit = {torch.bfloat16: 2**-7, torch.float16: 2**-10, torch.float32: 2**-22}[dtype]
    assert_rounds_like(y, ref, unit, bitwise=dtype != torch.float32)  # (float32: the sum's order shows)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_add_rms_norm_kernel_matches_the_three_operations_on_the_device(gpu, dtype):
    needs_cuda(gpu)
    from glmv_cli.kernels.rms_norm import add_rms_norm
    from glmv_cli.model.layers import RMSNorm

    g = torch.Generator(device=gpu).manual_seed(0)
    norms = [RMSNorm(4096, 1e-5).to(gpu) for _ in range(2)]
    for norm in norms:
        norm.weight.data = (1 + 0.1 * torch.randn(4096, device=gpu, generator=g)).to(dtype)
    x, a = ((3 * torch.randn(5, 4096, device=gpu, generator=g)).to(dtype) for _ in range(2))
    with torch.no_grad():
        r, y = add_rms_norm(a, x, norms[0].weight, 1e-5, norms[1].weight, 1e-5)
        r_ref = x + norms[0].weight * F.rms_norm(a.float(), (4096,), eps=1e-5).to(dtype)
        y_ref = norms[1].weight * F.rms_norm(r_ref.float(), (4096,), eps=1e-5).to(dtype)
    unit = {torch.bfloat16: 2**-7, torch.float16: 2**-10, torch.float32: 2**-21}[dtype]
    for out, ref in ((r, r_ref), (y, y_ref)):
        assert_rounds_like(out, ref, unit, bitwise=dtype != torch.float32)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_split_decode_attention_matches_torch_on_the_device(gpu, dtype):
    """9B's decode shapes: 2 key/value heads x 16 rows over a 2048-position cache, 1900 written."""
    needs_cuda(gpu)
    from glmv_cli.kernels.decode_attention import decode_attention

    g = torch.Generator(device=gpu).manual_seed(0)
    q = torch.randn(1, 2, 16, 128, device=gpu, generator=g).to(dtype)
    k, v = (torch.randn(1, 2, 2048, 128, device=gpu, generator=g).to(dtype) for _ in range(2))
    mask = torch.zeros(1, 1, 1, 2048, device=gpu, dtype=dtype).masked_fill(
        torch.arange(2048, device=gpu).view(1, 1, 1, 2048) >= 1900, float("-inf"))
    y, ref = decode_attention(q, k, v, mask), F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    tol = {torch.bfloat16: 2e-2, torch.float32: 1e-5}[dtype]
    assert (y.float() - ref.float()).abs().max() < tol
    assert F.cosine_similarity(y.float().flatten(), ref.float().flatten(), dim=0) > 0.9999


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_swiglu_kernel_matches_torch_on_the_device(gpu, dtype):
    needs_cuda(gpu)
    from glmv_cli.kernels.swiglu import swiglu

    g = torch.Generator(device=gpu).manual_seed(0)
    gate_up = (4 * torch.randn(2, 1, 2 * 13696, device=gpu, generator=g)).to(dtype)
    gate, up = gate_up.chunk(2, dim=-1)
    y, ref = swiglu(gate_up), up * F.silu(gate)
    assert_rounds_like(y, ref, {torch.bfloat16: 2**-7, torch.float32: 2**-20}[dtype], bitwise=dtype == torch.bfloat16)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_rope_kernel_matches_torch_on_the_device(gpu, dtype):
    needs_cuda(gpu)
    from glmv_cli.kernels.rope import rope_heads
    from glmv_cli.model.rope import apply_text_rope, inverse_frequencies, text_rope

    g = torch.Generator(device=gpu).manual_seed(0)
    qkv = torch.randn(1, 7, 36, 128, device=gpu, generator=g).to(dtype)
    cos, sin = text_rope(torch.randint(0, 5000, (3, 1, 7), device=gpu, generator=g),
                         inverse_frequencies(64, 1e4).to(gpu), (8, 12, 12), dtype)
    x = qkv[:, :, :34]
    y = rope_heads(x, cos, sin)
    ref = apply_text_rope(x.transpose(1, 2), cos, sin)
    # each side rounds the two products and their sum: within two roundings of the terms' size
    x64 = x.transpose(1, 2).double()
    even, odd = x64[..., :64:2], x64[..., 1:64:2]
    terms = (x64[..., :64] * cos[:, None].double()).abs() + (
        torch.stack((-odd, even), dim=-1).flatten(-2) * sin[:, None].double()).abs()
    unit = {torch.bfloat16: 2**-8, torch.float32: 2**-24}[dtype]
    bound = torch.cat([4 * unit * terms, torch.zeros_like(x64[..., 64:])], dim=-1) + 1e-30
    assert ((y.double() - ref.double()).abs() <= bound).all()
    assert (y == ref).float().mean() > 0.99  # no FMA: the same roundings as torch, almost all bit for bit


@pytest.mark.parametrize("dtype,quantize", [("bfloat16", None), ("float32", "int8"), ("bfloat16", "int8"),
                                            ("bfloat16", "int4")])
def test_weight_bytes_are_what_the_device_holds(tiny_folder, gpu, dtype, quantize):
    """memory.weight_bytes (what `glmv info` and the check before loading use) against the model
    loaded on the device (int8 there quantizes the vision tower too), and the device's memory
    counters on CUDA: the load leaves exactly that much more allocated."""
    import gc

    from glmv_cli import memory
    from glmv_cli.model.config import Glm4vConfig

    dt = getattr(torch, dtype)
    gc.collect()  # models of earlier tests are freed now, not during this load
    before = torch.cuda.memory_allocated(gpu) if gpu.type == "cuda" else 0
    glm = glmv_cli.load(tiny_folder, device=gpu, dtype=dtype, quantize=quantize)
    predicted = memory.weight_bytes(Glm4vConfig.from_folder(tiny_folder), dt, quantize, gpu)
    assert predicted == memory.tensor_bytes(glm.model)
    if gpu.type == "cuda":
        held = torch.cuda.memory_allocated(gpu) - before
        blocks = len(list(glm.model.parameters())) + len(list(glm.model.buffers()))
        assert predicted <= held <= predicted + 512 * blocks, (predicted, held)  # (a block rounds up to 512 B)
        assert memory.device_room(gpu)[0] > 0


def test_a_full_gpu_refuses_the_load_and_a_prompt_that_runs_out_fails_alone(gpu, tmp_path):
    """CUDA's own allocator, with the GPU filled by a tensor as another program would fill it: the
    load of the `small` shape (235 MiB in bfloat16) is refused before it allocates anything, naming
    what fits; loaded, and the GPU filled again, a question with a large image is one InputError;
    with the memory back, the same question gets the answer it got before, in a CUDA graph (an
    out-of-memory failure does not turn the graphs off)."""
    needs_cuda(gpu)
    from glmv_cli import memory
    from glmv_cli.errors import InputError, ModelError
    from glmv_cli.random_checkpoint import write_random_checkpoint
    from tests.model.conftest import random_image

    folder = write_random_checkpoint(tmp_path / "small", "small", device="cuda")
    picture = tmp_path / "big.png"
    random_image(1400, 1400).save(picture)
    gen = glmv_cli.GenerationOptions(max_new_tokens=8)
    load = glmv_cli.LoadOptions(max_pixels=1400 * 1400)

    torch.cuda.empty_cache()
    hog = torch.empty(memory.device_room(gpu)[0] - 64 * 2**20, dtype=torch.uint8, device=gpu)
    before = torch.cuda.memory_allocated(gpu)
    with pytest.raises(ModelError, match=r"^the weights need .* \(bfloat16\) but cuda .* free of"):
        glmv_cli.load(folder, device="cuda")
    assert torch.cuda.memory_allocated(gpu) == before  # refused before allocating
    del hog
    session = glmv_cli.Session(str(folder), device="cuda")
    expected = session.run("What is it?", [picture], load=load, generation=gen)
    torch.cuda.empty_cache()
    hog = torch.empty(memory.device_room(gpu)[0] - 8 * 2**20, dtype=torch.uint8, device=gpu)
    with pytest.raises(InputError, match=r"^out of memory on cuda .* reading a [\d,]+-token prompt .* in use by glmv"):
        session.run("What is it?", [picture], load=load, generation=gen)
    del hog
    again = session.run("What is it?", [picture], load=load, generation=gen)
    assert again.completion_ids == expected.completion_ids
    step = session.glmv.decode_step(False)
    assert step is not None and not step.failed and step.graph is not None
