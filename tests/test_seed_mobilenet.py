"""The seed ``CustomMobileNet_string`` classifies every JPEG it is given, with the blog's API.

Exported from the project's catalog (the hub stand-in), loaded as the server loads it
(``tfserving.bundle``): the signature is still ``input_img: string`` of any shape in,
``output_0: string [-1]`` out; a scalar or ``[1]`` is one image and gives ``[1]`` label,
``[n]`` images give ``[n]`` labels equal to the single-image ones, and a real server
answers REST requests with several images, in row and columnar format.
"""

from __future__ import annotations

import base64
import os
import shutil

import numpy as np
import pytest

from tests import serving_fixtures as sf

MODEL = "mobilenet_v2_test"


def _images() -> list[bytes]:
    """The catalog's sample photo and a few synthetic JPEGs of different sizes."""
    import tensorflow as tf

    rng = np.random.default_rng(7)
    noise = [tf.io.encode_jpeg(rng.integers(0, 256, (size, size + 8, 3), dtype=np.uint8))
             .numpy() for size in (40, 96)]
    with open(os.path.join(sf.REPO, "data", "images", "sample.jpg"), "rb") as f:
        return [f.read(), sf.jpeg(0, 64), sf.jpeg(255, 32), *noise]


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> str:
    """The seed MobileNet exported as the pipeline's exporter does it."""
    from components.export_servable.export import export_servable
    from pipeline.catalog import load_catalog

    catalog = load_catalog()
    [entry] = catalog.select([MODEL])
    path = str(tmp_path_factory.mktemp("seed") / MODEL)
    export_servable(entry.export_spec(), catalog.base_dir, path)
    return path


@pytest.fixture(scope="module")
def bundle(exported):
    from tfserving.bundle import load_bundle

    with load_bundle(exported) as loaded:
        yield loaded


def _labels(bundle, value) -> np.ndarray:
    out = bundle.run("serving_default", {"input_img": np.array(value, dtype=object)})["output_0"]
    assert out.dtype == object
    return out


def test_signature_keeps_the_blogs_api(exported):
    from tfserving.saved_model import read_meta_graph, signature_specs

    sig = signature_specs(read_meta_graph(exported))["serving_default"]
    assert sig.method_name == "tensorflow/serving/predict"
    assert {a: (s.dtype, s.shape) for a, s in sig.inputs.items()} == {
        "input_img": ("DT_STRING", None)}  # the blog's rank-agnostic spec
    assert {a: (s.dtype, s.shape) for a, s in sig.outputs.items()} == {
        "output_0": ("DT_STRING", (-1,))}


def test_one_image_gives_one_label_whatever_its_rank(bundle):
    jpeg = _images()[0]
    label = _labels(bundle, [jpeg])
    assert label.shape == (1,) and isinstance(label[0], bytes)
    with open(os.path.join(sf.REPO, "data", "labels", "ImageNetLabels.txt"), "rb") as f:
        assert label[0] in f.read().split(b"\n")  # from the labels asset
    assert _labels(bundle, jpeg).tolist() == label.tolist()  # a scalar
    assert _labels(bundle, [[jpeg]]).tolist() == label.tolist()  # [1, 1], as before


def test_several_images_give_one_label_each_equal_to_single_calls(bundle):
    images = _images()
    single = [_labels(bundle, [jpeg])[0] for jpeg in images]
    assert _labels(bundle, images).tolist() == single
    assert _labels(bundle, images[:2]).tolist() == single[:2]
    assert _labels(bundle, images[::-1]).tolist() == single[::-1]
    assert _labels(bundle, [images[0]] * 3).tolist() == [single[0]] * 3
    assert _labels(bundle, np.empty([0], dtype=object)).shape == (0,)


def test_a_bad_image_among_several_fails_the_call_naming_the_format(bundle):
    from tfserving.status import ServingError

    with pytest.raises(ServingError) as info:
        _labels(bundle, [_images()[0], b"not a jpeg"])
    assert info.value.code == "INVALID_ARGUMENT"
    assert "Unknown image file format" in info.value.message


@pytest.mark.slow
@pytest.mark.parametrize("flags", [(), ("--enable-batching",)], ids=["plain", "batching"])
def test_server_answers_several_images_per_request(exported, bundle, tmp_path, flags):
    import concurrent.futures

    images = _images()
    single = [_labels(bundle, [jpeg])[0].decode() for jpeg in images]
    b64 = [{"b64": base64.b64encode(jpeg).decode()} for jpeg in images]
    root = tmp_path / "serving"
    shutil.copytree(exported, root / MODEL / "1")
    with sf.running_server(str(root), MODEL, *flags) as server:
        url = f"{server.url}/v1/models/{MODEL}:predict"

        def post(body):
            response = sf.httpx.post(url, json=body, timeout=60)
            assert response.status_code == 200, response.text
            return response.json()

        # Today's request (the catalog's example form): shape [1], the same label.
        assert post({"inputs": [b64[0]]}) == {"outputs": [single[0]]}
        assert post({"instances": [b64[0]]}) == {"predictions": [single[0]]}
        assert post({"inputs": b64[:2]}) == {"outputs": single[:2]}
        assert post({"instances": b64[:2]}) == {"predictions": single[:2]}
        assert post({"instances": [{"input_img": v} for v in b64]}) == {"predictions": single}
        assert post({"inputs": {"input_img": b64}}) == {"outputs": single}
        # Concurrent requests of 1 and 2 images (merged when batching is on).
        bodies = [{"instances": b64[i % len(b64):i % len(b64) + 1 + i % 2]} for i in range(12)]
        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(post, bodies))
        for body, answer in zip(bodies, answers, strict=True):
            assert answer == {"predictions": [single[b64.index(v)] for v in body["instances"]]}
