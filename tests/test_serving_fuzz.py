"""Thousands of malformed or hostile requests: none crashes or hangs the server, each gets
TF Serving's answer (200 for what TF Serving accepts, a 4xx for the rest).

A seeded generator (``SERVING_FUZZ_SEED``, ``SERVING_FUZZ_COUNT`` to change) builds
requests whose verdict is known by construction: garbage bytes, non-object JSON,
random objects, valid requests with one leaf swapped for a value of the wrong
type, for a value TF Serving converts (a float input takes any JSON number,
narrowed to float32: 16777217 becomes 16777216, 1e39 Infinity) or for a list one
level deeper, broken shapes, huge numbers, deep nesting, oversized bodies, bad
signature names and path tricks. Requests go to 127.0.0.1 only, over one
keep-alive connection, reconnecting only when the server says it will close.
"""

from __future__ import annotations

import base64
import copy
import http.client as httplib
import json
import os
import random
import time

import pytest

from tests import serving_fixtures as sf

pytestmark = pytest.mark.slow

SEED = int(os.environ.get("SERVING_FUZZ_SEED", "20240607"))
COUNT = int(os.environ.get("SERVING_FUZZ_COUNT", "3000"))
MAX_BODY = 1_000_000
MODELS = ("sum_two", "fun_runif", "mobilenet_v2_test", "bytes_echo", "half_plus_two")
GOOD = ("/v1/models/sum_two:predict", b'{"instances": [[1.0, 2.0, 3.0]]}',
        {"predictions": [[3.0, 4.0, 5.0]]})


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("fuzz") / "serving")
    for model in MODELS:
        sf.add_version(root, model, 1, model)
    with sf.running_server(root, "sum_two", "--max-body-bytes", str(MAX_BODY)) as srv:
        yield srv


# How each model's graph takes an input one rank deeper holding one value, or no value
# (TF Serving reads such a request; its Session::Run checks dtypes only, the graph decides).
RANK_PLUS_ONE = {  # model: (one value accepted, no value accepted)
    "sum_two": (True, True),  # x + 2
    "half_plus_two": (True, True),  # 0.5 x + 2
    "bytes_echo": (True, True),  # length(data) * times, broadcast
    "mobilenet_v2_test": (True, False),  # the fixture's stand-in: exactly one JPEG
    "fun_runif": (False, False),  # the shape [N] must be a vector
}


class Generator:
    """Hostile requests, each with its verdict known by construction."""

    # TF Serving's AddValueToTensor (json_tensor.cc) refuses these for the leaf's dtype.
    FLOAT_BAD = ["1.0", "", True, False, None, {}, {"b64": "AA=="}]
    INT_BAD = [2.5, 1.0, "3", True, None, {}, {"b64": "AA=="}, 2**31, -(2**31) - 1,
               2**63, 1e10, -0.5]
    STRING_BAD = [1, 1.5, True, None, {}, {"b64": "%%%"}, {"b64": 1}, {"b64": "AA==", "x": 1},
                  {"b64": "Zm9v\u00e9"}]
    # ... and accepts these: a float takes any JSON number through GetFloat() (a C cast of
    # the double: rounded, +/-Infinity beyond float32's range, 0 below it), an int32 any
    # JSON integer in its range.
    FLOAT_ACCEPTED = [16777217, -33554433, 1e39, -1e39, 1.7e308, -1.7e308, 5e-324, -0.0, 0,
                      2**63 - 1, -(2**63), 2**64 - 1, 10**30]
    INT_ACCEPTED = [0, -1, 2**31 - 1, -(2**31)]

    def __init__(self, seed: int):
        self.rng = random.Random(seed)
        jpeg = base64.b64encode(sf.jpeg(128)).decode()
        self.templates = {
            "sum_two": [{"instances": [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]},
                        {"inputs": [[1.0, 2.0, 3.0]]}, {"inputs": {"x": [[1.0, 2.0, 3.0]]}}],
            "fun_runif": [{"inputs": {"N": 3}}, {"inputs": 3}],
            "mobilenet_v2_test": [{"inputs": [{"b64": jpeg}]}, {"instances": [{"b64": jpeg}]},
                                  {"inputs": {"input_img": {"b64": jpeg}}}],
            "bytes_echo": [{"instances": [{"data": "a", "times": 1}, {"data": "b", "times": 2}]},
                           {"inputs": {"data": ["a"], "times": [1]}}],
            "half_plus_two": [{"instances": [1.0, 2.0]}, {"inputs": {"x": [1.0]}}],
        }

    # -- helpers

    def path(self, model: str | None = None, verb: str = "predict") -> str:
        return f"/v1/models/{model or self.rng.choice(MODELS)}:{verb}"

    def random_json(self, depth: int = 0):
        rng = self.rng
        kind = rng.randrange(9 if depth < 4 else 6)
        if kind == 0:
            return None
        if kind == 1:
            return rng.choice([True, False])
        if kind == 2:
            return rng.choice([0, -1, 7, 2**31, 2**63 - 1, -(2**63), 2**64 - 1, 10**30])
        if kind == 3:
            return rng.choice([0.5, -1e-300, 1e300, 3.4e38, 1e39, -0.0])
        if kind in (4, 5):
            alphabet = "ab\u00e9\u4e2d\x00\n\"\\/{}[]"
            return "".join(rng.choice(alphabet) for _ in range(rng.randrange(8)))
        if kind in (6, 7):
            return [self.random_json(depth + 1) for _ in range(rng.randrange(4))]
        keys = ["x", "N", "data", "times", "b64", "input_img", "zz", "signature_name"]
        return {rng.choice(keys): self.random_json(depth + 1) for _ in range(rng.randrange(4))}

    @staticmethod
    def leaves(value, path=()):
        """Paths of the leaves (scalars and b64 objects) of a JSON template."""
        if isinstance(value, list):
            for i, item in enumerate(value):
                yield from Generator.leaves(item, (*path, i))
        elif isinstance(value, dict) and not (len(value) == 1 and "b64" in value):
            for key, item in value.items():
                yield from Generator.leaves(item, (*path, key))
        else:
            yield path, value

    @staticmethod
    def input_of(path) -> str:
        """The input a leaf belongs to ("" for a request's only, unnamed input)."""
        at = 1 if path[0] == "inputs" else 2  # {"inputs": {name: ...}}, [{name: ...}]
        named = path[at] if len(path) > at else None
        return named if isinstance(named, str) else ""

    @staticmethod
    def replace(doc, path, new):
        target = doc
        for step in path[:-1]:
            target = target[step]
        target[path[-1]] = new

    # -- categories: each returns (method, path, body, accepted): accepted is True for a
    # request TF Serving answers (200), False for one it refuses (4xx)

    def garbage_bytes(self):
        size = self.rng.randrange(1, 200)
        body = bytes(self.rng.randrange(256) for _ in range(size))
        return "POST", self.path(), b"{" + body, False

    def truncated_json(self):
        model = self.rng.choice(MODELS)
        text = json.dumps(self.rng.choice(self.templates[model]))
        return "POST", self.path(model), text[: self.rng.randrange(1, len(text))].encode(), False

    def non_object(self):
        value = self.random_json()
        while isinstance(value, dict):
            value = self.random_json()
        return "POST", self.path(), json.dumps(value).encode(), False

    def random_object(self):
        doc = {}
        for _ in range(self.rng.randrange(5)):
            key = self.rng.choice(["zz", "signature_name", "examples", "context", "b64", "x"])
            doc[key] = self.random_json(1)
        verb = self.rng.choice(["predict", "predict", "classify", "regress"])
        if verb != "predict":
            doc.pop("examples", None)
        return "POST", self.path(verb=verb), json.dumps(doc).encode(), False

    def random_inputs(self):
        # Random values under "inputs"/"instances" for the string-free numeric models,
        # mixed with a guaranteed wrong-typed leaf so the request cannot be valid.
        model = self.rng.choice(["sum_two", "fun_runif"])
        value = [self.random_json(1), "not a number"]
        key = self.rng.choice(["inputs", "instances"])
        return "POST", self.path(model), json.dumps({key: value}).encode(), False

    def wrong_type(self):
        model = self.rng.choice(MODELS)
        doc = copy.deepcopy(self.rng.choice(self.templates[model]))
        leaf_path, leaf = self.rng.choice(list(self.leaves(doc)))
        if isinstance(leaf, float):
            bad = self.rng.choice(self.FLOAT_BAD)
        elif isinstance(leaf, int):
            bad = self.rng.choice(self.INT_BAD)
        else:
            bad = self.rng.choice(self.STRING_BAD + ["not a jpeg"] * (model == "mobilenet_v2_test"))
        self.replace(doc, leaf_path, bad)
        return "POST", self.path(model), json.dumps(doc).encode(), False

    def converted_value(self):
        model = self.rng.choice(["sum_two", "half_plus_two", "bytes_echo"])
        doc = copy.deepcopy(self.rng.choice(self.templates[model]))
        leaf_path, leaf = self.rng.choice(
            [(p, v) for p, v in self.leaves(doc) if type(v) in (int, float)])
        accepted = self.FLOAT_ACCEPTED if isinstance(leaf, float) else self.INT_ACCEPTED
        self.replace(doc, leaf_path, self.rng.choice(accepted))
        return "POST", self.path(model), json.dumps(doc).encode(), True

    def nested_leaf(self):
        """One leaf becomes a list holding it, or an empty list. TF Serving reads it only if
        it was its input's only value (else the lists are ragged or of mixed depth:
        json_tensor.cc, FillTensorProto and AddInstanceItem); then the graph decides."""
        model = self.rng.choice(MODELS)
        doc = copy.deepcopy(self.rng.choice(self.templates[model]))
        leaves = list(self.leaves(doc))
        leaf_path, leaf = self.rng.choice(leaves)
        empty = self.rng.random() < 0.5
        self.replace(doc, leaf_path, [] if empty else [leaf])
        sole = [self.input_of(p) for p, _ in leaves].count(self.input_of(leaf_path)) == 1
        accepted = sole and RANK_PLUS_ONE[model][empty]
        return "POST", self.path(model), json.dumps(doc).encode(), accepted

    def wrong_shape(self):
        rng = self.rng
        choice = rng.randrange(6)
        if choice == 0:
            row = [1.0] * rng.choice([0, 1, 2, 4, 7])
            doc = {"instances": [[1.0, 2.0, 3.0], row]}
        elif choice == 1:
            # A rank the graph cannot take (feeds are checked by dtype only, as in TF
            # Serving: sum_two adds 2 to any shape, RandomUniform needs a vector shape).
            doc = {"inputs": {"N": [[1, 2, 3]]}}
        elif choice == 2:
            doc = {"instances": [rng.randrange(1, 5)]}  # a scalar input has no batch dim
        elif choice == 3:
            doc = {"instances": [], "signature_name": "serving_default"}
        elif choice == 4:
            doc = {"instances": [[1.0, 2.0, 3.0]], "inputs": [[1.0, 2.0, 3.0]]}
        else:
            doc = {"instances": [{"data": "a", "times": 1}, {"data": "b"}]}
            return "POST", self.path("bytes_echo"), json.dumps(doc).encode(), False
        model = "fun_runif" if choice in (1, 2) else "sum_two"
        return "POST", self.path(model), json.dumps(doc).encode(), False

    def huge_numbers(self):
        number = self.rng.choice(["1e400", "-1e400", "1" * 400, "-" + "9" * 5000,
                                  "123456789012345678901234567890", "1e-400e5", "0x10",
                                  "NaN0", "Infinityy", "--1", "1.", ".5", "01"])
        model, template = self.rng.choice([
            ("sum_two", '{"instances": [[%s, 1.0, 2.0]]}'),
            ("fun_runif", '{"inputs": {"N": %s}}'),
            ("bytes_echo", '{"inputs": {"data": ["a"], "times": [%s]}}'),
        ])
        # rapidjson refuses a number beyond a double's range (kParseErrorNumberTooBig); a
        # float input takes any finite double (GetFloat), int inputs only integers.
        accepted = model == "sum_two" and number == "123456789012345678901234567890"
        return "POST", self.path(model), (template % number).encode(), accepted

    def deep_nesting(self):
        depth = self.rng.choice([33, 100, 1000, 1025, 5000, 20000])
        opener, closer = self.rng.choice([("[", "]"), ('{"a":', "}")])
        inner = opener * depth + "1" + closer * depth
        key = self.rng.choice(["instances", "inputs", "examples"])
        verb = "classify" if key == "examples" else "predict"
        model = "half_plus_two" if verb == "classify" else self.rng.choice(MODELS)
        body = '{"' + key + '": ' + inner + "}"
        if key == "examples":
            body = '{"signature_name": "classify_x_to_y", "examples": [{"x": ' + inner + "}]}"
        return "POST", self.path(model, verb), body.encode(), False

    def bad_signature_name(self):
        model = self.rng.choice(MODELS)
        doc = copy.deepcopy(self.rng.choice(self.templates[model]))
        doc["signature_name"] = self.rng.choice(
            [1, None, True, [], {}, "zz_missing", "__saved_model_init_op", "../serving_default",
             "\u00e9" * 50, "x" * 10000])
        return "POST", self.path(model), json.dumps(doc).encode(), False

    def examples(self):
        # TF Serving's AddValueToFeature (json_tensor.cc) refuses the first ones; the model's
        # parse of 'x' (one float) refuses the others.
        bad_features = [None, [[1.0]], [1, "a"], {"x": 1}, {"b64": "%%%"}, 2**64 - 1, [1.0, True],
                        [None], 1, "a", [1.0, 2.0]]
        # A JSON double becomes a float_list value through GetFloat(), as for tensors.
        accepted_features = [1e39, -1e39, 1.7e308, 5e-324, [2.5], -0.0]
        accepted = self.rng.random() < 0.3
        example = {"x": self.rng.choice(accepted_features if accepted else bad_features)}
        if self.rng.random() < 0.5:  # another feature the model does not read
            example["y"] = self.rng.choice(
                ["", [], ["a", "b"], 7, [1.5, 2.5], True, {"b64": "AA=="}])
        doc = {"signature_name": self.rng.choice(["classify_x_to_y", "regress_x_to_y"]),
               "examples": [example]}
        verb = "classify" if doc["signature_name"].startswith("classify") else "regress"
        if self.rng.random() < 0.2:
            doc = {"examples": [{"x": 1.0}]}  # predict signatures are not classify/regress
            return "POST", self.path(self.rng.choice(["sum_two", "bytes_echo"]), verb), \
                json.dumps(doc).encode(), False
        return "POST", self.path("half_plus_two", verb), json.dumps(doc).encode(), accepted

    def path_trick(self):
        rng = self.rng
        name = rng.choice(["..", "../..", "%2e%2e", "%2e%2e%2f%2e%2e%2fetc", "%2Fetc%2Fpasswd",
                           "/etc/passwd", "sum_two/../fun_runif", "sum_two%00", "sum_two%2F..",
                           "%00", "x" * 300, "%C3%A9", "%FF%FE", "sum_two;ls", "sum_two%20",
                           "SUM_TWO", "sum_two/versions", "", "sum_two/versions/1/versions/1",
                           "~root", "sum_two\\..\\x", "%252e%252e", ".", "%2e"])
        suffix = rng.choice(["", ":predict", ":classify", ":regress", "/metadata",
                             "/versions/1", "/versions/-1", "/versions/1.0",
                             "/versions/99999999999999999999", "/labels/", "/labels/%2e%2e",
                             "/labels/..", ":PREDICT", ":foo", "/versions/1:predict",
                             "/labels/stable:predict", "?x=1", "#frag"])
        prefix = rng.choice(["/v1/models/", "/v1/models//", "/V1/Models/", "/v1/models/./",
                             "/v1/../v1/models/", "/v2/models/", "/v1/"])
        method = rng.choice(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
        body = b'{"instances": [[1.0, 2.0, 3.0]]}' if method != "GET" else None
        return method, prefix + name + suffix, body, False

    def oversized(self):
        size = self.rng.choice([MAX_BODY + 1, MAX_BODY * 2, MAX_BODY * 5])
        return "POST", self.path(), b'{"instances": [' + b" " * size + b"]}", False

    def next(self):
        categories = [
            (self.garbage_bytes, 8), (self.truncated_json, 8), (self.non_object, 8),
            (self.random_object, 10), (self.random_inputs, 8), (self.wrong_type, 16),
            (self.converted_value, 6), (self.nested_leaf, 6), (self.wrong_shape, 8),
            (self.huge_numbers, 8), (self.deep_nesting, 5), (self.bad_signature_name, 6),
            (self.examples, 8), (self.path_trick, 20), (self.oversized, 0.3),
        ]
        fns, weights = zip(*categories, strict=True)
        fn = self.rng.choices(fns, weights)[0]
        return (fn.__name__, *fn())


class Connection:
    """One keep-alive connection; reconnects only when the server announced a close."""

    def __init__(self, port: int):
        self.port = port
        self.conn = httplib.HTTPConnection("127.0.0.1", port, timeout=60)

    def send(self, method: str, path: str, body: bytes | None) -> tuple[int, bytes]:
        self.conn.request(method, path, body=body,
                          headers={"Content-Type": "application/json"} if body else {})
        response = self.conn.getresponse()
        data = response.read()
        if response.will_close:
            self.conn.close()
            self.conn = httplib.HTTPConnection("127.0.0.1", self.port, timeout=60)
        return response.status, data

    def close(self) -> None:
        self.conn.close()


@pytest.mark.timeout(300)
def test_no_request_crashes_the_server_and_each_gets_tf_servings_status(server):
    generator = Generator(SEED)
    conn = Connection(server.port)
    failures = []
    by_category: dict[str, int] = {}
    answered = 0
    started = time.monotonic()
    try:
        for i in range(COUNT):
            category, method, path, body, accepted = generator.next()
            by_category[category] = by_category.get(category, 0) + 1
            try:
                status, data = conn.send(method, path, body)
            except (OSError, httplib.HTTPException) as err:
                failures.append((category, method, path, (body or b"")[:200], f"dropped: {err!r}"))
                conn = Connection(server.port)
                continue
            if accepted:
                answered += 1
                # Python's json reads TF Serving's Infinity/NaN tokens.
                if status != 200 or not set(json.loads(data)) <= {
                        "predictions", "outputs", "results"}:
                    failures.append((category, method, path, (body or b"")[:200], status,
                                     data[:300]))
            elif not 400 <= status < 500:
                failures.append((category, method, path, (body or b"")[:200], status, data[:300]))
            elif path.startswith("/v1/") and status != 413:
                assert set(json.loads(data)) == {"error"}, data
            if i % 100 == 99:
                status, data = conn.send("POST", GOOD[0], GOOD[1])
                assert (status, json.loads(data)) == (200, GOOD[2]), data
    finally:
        conn.close()
    elapsed = time.monotonic() - started
    assert not failures, f"{len(failures)} bad answers, first ones: {failures[:5]}"
    assert server.proc.poll() is None, server.log_tail()
    status, data = Connection(server.port).send("POST", GOOD[0], GOOD[1])
    assert (status, json.loads(data)) == (200, GOOD[2])
    assert len(by_category) == 15, by_category
    assert answered >= COUNT // 20, answered  # the accepted side is exercised too
    assert "Traceback" not in server.log_tail(200_000)
    print(f"{COUNT} hostile requests ({answered} that TF Serving answers) in {elapsed:.1f}s: "
          f"{by_category}")
