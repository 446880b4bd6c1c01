"""Tests of input validation and of saving and loading Einsum networks."""

import re

import pytest
import torch

from einet_reference import randomize
from spanlib import Bernoulli, Binomial, Categorical, EinsumNetwork, Normal, random_binary_trees

pytestmark = pytest.mark.usefixtures("single_thread")


def build(leaf, num_vars=6, K=2, num_dims=1, seed=0):
    net = EinsumNetwork(random_binary_trees(num_vars, 2, 2, seed=seed), leaf, K, num_dims)
    randomize(net, seed)
    return net


# ---------------------------------------------------------------------- shapes, values and dtypes
def test_wrong_num_vars():
    net = build(Bernoulli())
    expected = r"x has 5 variables but the network has 6 \(shape \(3, 5, 1\)\); pass x with shape \(batch, 6, 1\)"
    with pytest.raises(ValueError, match=expected):
        net(torch.zeros(3, 5))


def test_wrong_num_dims():
    net = build(Normal(), num_dims=2)
    expected = r"x has 3 dims per variable but the network has num_dims=2; pass x with shape \(batch, 6, 2\)"
    with pytest.raises(ValueError, match=expected):
        net(torch.zeros(3, 6, 3))
    with pytest.raises(ValueError, match=r"x must have shape \(batch, 6, 2\), got \(3, 6\)"):
        net(torch.zeros(3, 6))


def test_wrong_rank():
    net = build(Bernoulli())
    with pytest.raises(ValueError, match=r"or \(batch, 6\), got \(6,\)"):
        net(torch.zeros(6))


def test_nan_in_observed():
    net = build(Normal())
    x = torch.zeros(4, 6)
    x[2, 3] = float("nan")
    expected = r"x has 1 NaN values in observed entries \(first at sample 2, variable 3\); mark them as missing with marginalize"
    with pytest.raises(ValueError, match=expected):
        net(x)
    mask = torch.zeros(4, 6, dtype=torch.bool)
    mask[2, 3] = True
    assert torch.isfinite(net(x, marginalize=mask)).all()


@pytest.mark.parametrize(
    "leaf, value, support, fix",
    [
        (Categorical(4), 256.0, r"integers in \[0, 3\]", r"Map the data to integer codes 0 to 3"),
        (Categorical(4), -1.0, r"integers in \[0, 3\]", r"Map the data to integer codes 0 to 3"),
        (Categorical(4), 1.5, r"integers in \[0, 3\]", r"Map the data to integer codes 0 to 3"),
        (Bernoulli(), 0.5, r"integers in \[0, 1\]", r"Binarise the data"),
        (Bernoulli(), 2.0, r"integers in \[0, 1\]", r"Binarise the data"),
        (Binomial(5), -1.0, r"integers in \[0, 5\]", r"Pass integer counts from 0 to 5"),
        (Binomial(5), 6.0, r"integers in \[0, 5\]", r"Pass integer counts from 0 to 5"),
        (Normal(), float("inf"), r"finite real numbers", r"Replace the infinite values"),
    ],
)
def test_value_outside_support(leaf, value, support, fix):
    net = build(leaf)
    x = torch.zeros(3, 6)
    x[1, 4] = value
    x[2, 0] = value
    family = type(leaf).__name__
    expected = (
        rf"x has 2 observed values that {family} leaves do not accept \(they take {support}\); "
        rf"the first is {re.escape(str(value))} at sample 1, variable 4\. {fix}.*"
        r"Entries marked as missing with marginalize are not checked"
    )
    with pytest.raises(ValueError, match=expected):
        net(x)


def test_outside_support_names_dim():
    net = build(Normal(), num_dims=3)
    x = torch.zeros(2, 6, 3)
    x[1, 5, 2] = float("-inf")
    with pytest.raises(ValueError, match=r"the first is -inf at sample 1, variable 5, dim 2\."):
        net(x)


def test_nan_names_dim():
    net = build(Normal(), num_dims=3)
    x = torch.zeros(2, 6, 3)
    x[0, 2, 1] = float("nan")
    with pytest.raises(ValueError, match=r"x has 1 NaN values in observed entries \(first at sample 0, variable 2, dim 1\)"):
        net(x)


def test_outside_support_masked_ok():
    net = build(Categorical(4))
    x = torch.zeros(3, 6)
    x[1, 4] = 256
    mask = torch.zeros(6, dtype=torch.bool)
    mask[4] = True
    assert torch.isfinite(net(x, marginalize=mask)).all()


def test_uint8_categorical_ok():
    net = build(Categorical(4))
    x = torch.randint(0, 4, (3, 6))
    assert torch.equal(net(x.to(torch.uint8)), net(x.float()))


def test_float64_into_float32_normal():
    net = build(Normal())
    with pytest.raises(TypeError, match=r"x has dtype torch.float64 but the network's parameters are torch.float32"):
        net(torch.zeros(3, 6, dtype=torch.float64))


def test_uint8_into_normal():
    net = build(Normal())
    with pytest.raises(TypeError, match=r"leaves need floating-point input, got torch.uint8"):
        net(torch.zeros(3, 6, dtype=torch.uint8))


def test_complex_input():
    net = build(Bernoulli())
    with pytest.raises(TypeError, match="complex dtype"):
        net(torch.zeros(3, 6, dtype=torch.complex64))


def test_not_a_tensor():
    net = build(Bernoulli())
    with pytest.raises(TypeError, match="x must be a torch.Tensor, got list"):
        net([[0.0] * 6])


def test_wrong_device_meta():
    net = build(Bernoulli())
    with pytest.raises(ValueError, match=r"x is on meta but the network is on cpu"):
        net(torch.zeros(3, 6, device="meta"))
    with pytest.raises(ValueError, match=r"marginalize is on meta but the network is on cpu"):
        net(torch.zeros(3, 6), marginalize=torch.zeros(6, dtype=torch.bool, device="meta"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_wrong_device_cuda():
    net = build(Bernoulli())
    with pytest.raises(ValueError, match=r"x is on cuda:0 but the network is on cpu"):
        net(torch.zeros(3, 6, device="cuda"))


def test_empty_batch():
    net = build(Bernoulli())
    with pytest.raises(ValueError, match=r"x is an empty batch \(shape \(0, 6, 1\)\)"):
        net(torch.zeros(0, 6))


def test_bad_mask_dtype():
    net = build(Bernoulli())
    with pytest.raises(TypeError, match="marginalize must have dtype torch.bool .* got torch.int64"):
        net(torch.zeros(3, 6), marginalize=torch.zeros(6, dtype=torch.long))
    with pytest.raises(TypeError, match="marginalize must be a bool tensor, got list"):
        net(torch.zeros(3, 6), marginalize=[True] * 6)


def test_bad_mask_shape():
    net = build(Bernoulli())
    with pytest.raises(ValueError, match=r"marginalize must have shape \(6,\) or \(3, 6\), got \(2, 6\)"):
        net(torch.zeros(3, 6), marginalize=torch.zeros(2, 6, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"got \(5,\)"):
        net(torch.zeros(3, 6), marginalize=torch.zeros(5, dtype=torch.bool))


def test_evidence_errors_name_evidence():
    net = build(Bernoulli())
    with pytest.raises(ValueError, match=r"evidence has 12 observed values that Bernoulli leaves do not accept.* with mask are"):
        net.mpe(evidence=torch.full((2, 6), 0.5), mask=torch.zeros(6, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"mask must have shape \(6,\) or \(2, 6\), got \(3,\)"):
        net.sample(evidence=torch.zeros(2, 6), mask=torch.zeros(3, dtype=torch.bool))


def test_constructor_errors():
    graph = random_binary_trees(6, 2, 1)
    with pytest.raises(ValueError, match="K must be at least 1, got 0"):
        EinsumNetwork(graph, Bernoulli(), K=0)
    with pytest.raises(ValueError, match="num_dims must be at least 1, got 0"):
        EinsumNetwork(graph, Bernoulli(), K=2, num_dims=0)
    with pytest.raises(ValueError, match="num_values must be at least 2, got 1"):
        Categorical(1)
    with pytest.raises(ValueError, match="num_trials must be at least 1, got 0"):
        Binomial(0)
    with pytest.raises(ValueError, match="need 0 < min_var < max_var, got min_var=1.0, max_var=0.5"):
        Normal(1.0, 0.5)


# ---------------------------------------------------------------------- checkpoints
def inputs_for(net):
    generator = torch.Generator().manual_seed(1)
    shape = (8, net.num_vars, net.num_dims)
    if net.leaf_family.name == "normal":
        return torch.randn(shape, generator=generator)
    high = net.leaf_family.num_values if net.leaf_family.name == "categorical" else 2
    return torch.randint(0, high, shape, generator=generator).float()


@pytest.mark.parametrize("leaf, num_dims", [(Bernoulli(), 1), (Categorical(5), 1), (Normal(0.01, 3.0), 3)])
def test_save_load_bit_identical(tmp_path, leaf, num_dims):
    net = build(leaf, num_vars=7, K=3, num_dims=num_dims, seed=2)
    x = inputs_for(net)
    mask = torch.zeros(8, 7, dtype=torch.bool)
    mask[::2, 3] = True
    path = tmp_path / "einet.pt"
    net.save(path)
    loaded = EinsumNetwork.load(path)
    assert loaded.leaf_family.config() == leaf.config()
    assert loaded.graph == net.graph
    with torch.no_grad():
        assert torch.equal(loaded(x), net(x))
        assert torch.equal(loaded(x, marginalize=mask), net(x, marginalize=mask))
    assert torch.equal(loaded.sample(20, seed=3), net.sample(20, seed=3))
    assert torch.equal(loaded.mpe(evidence=x, mask=mask), net.mpe(evidence=x, mask=mask))


def test_save_load_float64(tmp_path):
    net = build(Normal(0.01, 3.0), num_vars=7, K=3, num_dims=2, seed=4).double()
    x = torch.randn(8, 7, 2, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    path = tmp_path / "einet64.pt"
    net.save(path)
    loaded = EinsumNetwork.load(path)
    for name, parameter in loaded.named_parameters():
        assert parameter.dtype == torch.float64, name
    with torch.no_grad():
        assert torch.equal(loaded(x), net(x))


def test_load_corrupt_file(tmp_path):
    net = build(Bernoulli())
    path = tmp_path / "einet.pt"
    net.save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=f"checkpoint {re.escape(str(path))} is corrupt or not a torch file"):
        EinsumNetwork.load(path)


@pytest.mark.parametrize("content", [b"", b"garbage bytes\x00\x01", b"hello", b"{\"format\": 1}"])
def test_load_garbage_file(tmp_path, content):
    path = tmp_path / "einet.pt"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=r"is corrupt or not a torch file: .* raised \w+; save the model again$") as caught:
        EinsumNetwork.load(path)
    # torch's advice to retry with weights_only=False would run code from an untrusted file.
    assert "weights_only` set to `False`" not in str(caught.value)


def test_load_directory(tmp_path):
    with pytest.raises(IsADirectoryError, match=f"checkpoint {re.escape(str(tmp_path))} is a directory"):
        EinsumNetwork.load(tmp_path)


@pytest.mark.parametrize(
    "edit, reason",
    [
        (lambda config: config.update(leaf="poisson"), "unknown leaf family 'poisson'"),
        (lambda config: config["graph"]["partitions"].__setitem__(0, [0, 1, 1]), "partition 0 is not decomposable"),
        (lambda config: config["leaf_config"].update(bogus=1), "unexpected keyword argument 'bogus'"),
    ],
)
def test_load_bad_config_names_path(tmp_path, edit, reason):
    path = tmp_path / "einet.pt"
    build(Bernoulli()).save(path)
    payload = torch.load(path, weights_only=True)
    edit(payload["config"])
    torch.save(payload, path)
    with pytest.raises(ValueError, match=f"checkpoint {re.escape(str(path))} does not match its configuration: .*{reason}"):
        EinsumNetwork.load(path)


def test_load_text_file(tmp_path):
    path = tmp_path / "notes.pt"
    path.write_text("not a checkpoint\n")
    with pytest.raises(ValueError, match=f"checkpoint {re.escape(str(path))} is corrupt or not a torch file"):
        EinsumNetwork.load(path)


def test_load_other_format(tmp_path):
    plain = tmp_path / "plain.pt"
    torch.save({"weights": torch.zeros(3)}, plain)
    with pytest.raises(ValueError, match=f"{re.escape(str(plain))} is not a spanlib checkpoint"):
        EinsumNetwork.load(plain)
    tagged = tmp_path / "tagged.pt"
    torch.save({"format": "spanlib.SPAN/1"}, tagged)
    with pytest.raises(ValueError, match=f"{re.escape(str(tagged))} holds 'spanlib.SPAN/1', not 'spanlib.EinsumNetwork/1'"):
        EinsumNetwork.load(tagged)


def test_load_mismatched_state(tmp_path):
    net = build(Bernoulli(), K=2)
    path = tmp_path / "einet.pt"
    net.save(path)
    payload = torch.load(path, weights_only=True)
    payload["config"]["K"] = 3
    torch.save(payload, path)
    with pytest.raises(ValueError, match=f"checkpoint {re.escape(str(path))} does not match its configuration"):
        EinsumNetwork.load(path)


def test_load_missing_config_key(tmp_path):
    net = build(Bernoulli())
    path = tmp_path / "einet.pt"
    net.save(path)
    payload = torch.load(path, weights_only=True)
    del payload["config"]["leaf"]
    torch.save(payload, path)
    expected = f"checkpoint {re.escape(str(path))} does not match its configuration: missing key 'leaf'; save the network again"
    with pytest.raises(ValueError, match=expected):
        EinsumNetwork.load(path)


def test_load_missing_file(tmp_path):
    path = tmp_path / "absent.pt"
    with pytest.raises(FileNotFoundError, match=f"checkpoint {re.escape(str(path))} does not exist"):
        EinsumNetwork.load(path)
