"""What `import ember` and its subpackages load (issue 12): `import ember` is numpy and the
dtypes, the frontend loads on first use, networkx with the first IR graph, the compiler at
`ember.compile`; `ember.ir` and `ember.runtime` load alone. Checked through `sys.modules` in
a fresh interpreter, not by timing; and every public name of ember still resolves.
"""
import json
import subprocess
import sys

import pytest

import ember

FRONTEND, NETWORKX, COMPILER, LLVMLITE = "ember.frontend", "networkx", "ember.compiler", "llvmlite"

# Every public name `import ember` gave before the frontend loaded lazily (issue 12): all must still resolve.
PUBLIC_NAMES = """
    BoolTensor ByteTensor DoubleTensor FloatTensor Generator IntTensor LongTensor OpError Size Tensor abs
    accelerator add addcdiv addcmul addmm all allclose amax amin aminmax any arange argmax argmin argsort
    argwhere as_tensor atleast_1d atleast_2d autograd backends bmm bool broadcast_shapes broadcast_tensors
    broadcast_to can_cast cat ceil chunk clamp clamp_max clamp_min clip clone compile compiler concat
    concatenate config cos cosh count_nonzero cross cuda cumsum device diag dist div divide dot double dtype
    dtypes einsum empty empty_like enable_grad eq equal erf exp exp2 explain expm1 eye flatten flip fliplr
    flipud float float16 float32 float64 floor floor_divide fmod frac from_numpy frontend full full_like
    functional gather ge ger get_default_device get_default_dtype get_rng_state greater greater_equal gt half
    hstack index_add index_select inference_mode initial_seed inner int int16 int32 int64 int8 ir
    is_floating_point is_grad_enabled is_tensor isclose isfinite isinf isnan kthvalue le lerp less less_equal
    linalg linalg_module linspace load log log10 log1p log2 logical_and logical_not logical_or logical_xor
    logspace logsumexp long lt manual_seed masked_fill masked_select matmul max maximum mean median meshgrid min
    minimum mm movedim msort mul multiply mv nan_to_num narrow ne neg negative nn no_grad nonzero norm not_equal
    numel ones ones_like ops optim outer passes permute pow prod promote_types rand rand_like randint
    randint_like randn randn_like randperm reciprocal relu remainder repeat_interleave reshape result_type roll
    round rsqrt runtime save scatter scatter_add seed set_default_device set_default_dtype set_grad_enabled
    set_rng_state short sigmoid sign sin sinh sort split sqrt square squeeze stack std std_mean sub subtract sum
    svd swapaxes swapdims t take_along_dim tan tanh tensor tensordot tile topk trace transforms transpose tril
    triu true_divide trunc uint8 unbind unflatten unique unsqueeze utils var var_mean vstack where zeros
    zeros_like""".split()


def run_fresh(code, tmp_path):
    """Run `code` in a fresh interpreter (outside the checkout, so the installed ember is the
    one imported); returns the JSON object its last line printed."""
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def loaded(*names):
    """Code that prints which of `names` (and their submodules) are in sys.modules."""
    return ("import json, sys\n"
            f"print(json.dumps({{n: any(m == n or m.startswith(n + '.') for m in sys.modules) for n in {names!r}}}))")


def test_import_ember_loads_neither_the_frontend_nor_networkx_nor_the_compiler(tmp_path):
    code = "import ember\nassert ember.float32.is_floating_point\n" + loaded(FRONTEND, NETWORKX, COMPILER, LLVMLITE)
    assert run_fresh(code, tmp_path) == {FRONTEND: False, NETWORKX: False, COMPILER: False, LLVMLITE: False}


def test_ir_loads_alone_and_networkx_loads_with_the_first_graph(tmp_path):
    code = ("import json, sys\n"
            "import numpy as np\n"
            "import ember.ir\n"
            "from ember.ir import dot, json_format, stats, text, verify, interpreter\n"
            "networkx_before_a_graph = 'networkx' in sys.modules\n"
            "graph = ember.ir.Graph('tiny')\n"
            "x = graph.add_input((3,), 'float32', 'x')\n"
            "square = graph.add_node('mul', [x, x], (3,), 'float32')\n"
            "graph.outputs = [graph.add_node('exp', [square], (3,), 'float32')]\n"
            "graph.verify()\n"
            "y = ember.ir.interpret(graph, np.array([0, 1, 2], np.float32))\n"
            "assert np.allclose(y, np.exp([0, 1, 4])), y\n"
            "print(json.dumps({'networkx before a graph': networkx_before_a_graph}))\n"
            + loaded(FRONTEND, NETWORKX, COMPILER))
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    before, after = (json.loads(line) for line in done.stdout.strip().splitlines()[-2:])
    assert before == {"networkx before a graph": False}
    assert after == {FRONTEND: False, NETWORKX: True, COMPILER: False}


def test_runtime_and_all_its_modules_load_without_the_frontend_or_networkx(tmp_path):
    code = ("import importlib, pkgutil\n"
            "import ember.runtime\n"
            "for found in pkgutil.iter_modules(ember.runtime.__path__, 'ember.runtime.'):\n"
            "    importlib.import_module(found.name)\n" + loaded(FRONTEND, NETWORKX))
    assert run_fresh(code, tmp_path) == {FRONTEND: False, NETWORKX: False}


def test_eager_tensors_load_the_frontend_but_not_networkx_or_the_compiler(tmp_path):
    code = ("import ember\n"
            "y = ember.nn.functional.relu(ember.arange(4.0) - 1) * 2\n"
            "assert y.tolist() == [0.0, 0.0, 2.0, 4.0], y\n" + loaded(FRONTEND, NETWORKX, COMPILER, LLVMLITE))
    assert run_fresh(code, tmp_path) == {FRONTEND: True, NETWORKX: False, COMPILER: False, LLVMLITE: False}


def test_compile_loads_the_compiler_and_its_first_call_builds_a_graph(tmp_path):
    # (a cache of its own: with the program cached, the first call skips the passes and networkx)
    code = ("import os; os.environ['EMBER_CACHE_DIR'] = os.path.abspath('cache')\n"
            "import ember, sys\n"
            "f = ember.compile(lambda x: x * 2 + 1)\n"
            "compiler_at_compile, networkx_at_compile = 'ember.compiler' in sys.modules, 'networkx' in sys.modules\n"
            "assert f(ember.ones(4)).tolist() == [3.0] * 4\n"
            "print(json.dumps([compiler_at_compile, networkx_at_compile, 'networkx' in sys.modules]))\n")
    assert run_fresh("import json\n" + code, tmp_path) == [True, False, True]


def test_every_public_name_resolves_and_dir_lists_it():
    missing = [name for name in PUBLIC_NAMES if not hasattr(ember, name)]
    assert not missing, f"ember lost public names: {missing}"
    assert set(PUBLIC_NAMES) <= set(dir(ember))
    assert ember.Tensor is ember.frontend.tensor.Tensor and ember.device is ember.frontend.tensor.Device
    assert ember.linalg_module is ember.linalg is ember.frontend.linalg.linalg
    assert ember.float32 is ember.dtypes.float32 and ember.trace is ember.frontend.trace_function.trace
    with pytest.raises(AttributeError, match="has no attribute 'no_such_name'"):
        ember.no_such_name  # noqa: B018


def test_star_import_gives_the_public_api(tmp_path):
    code = ("from ember import *\n"
            "import json\n"
            "print(json.dumps([Tensor.__name__, nn.Linear.__name__, float32.name, callable(compile)]))\n")
    assert run_fresh(code, tmp_path) == ["Tensor", "Linear", "float32", True]


def test_frontend_modules_have_one_object_under_both_names_when_imported_first(tmp_path):
    # `import ember.nn.X` before anything else touched the frontend: the module is ember.frontend.nn.X,
    # never a second copy (a copy would have its own classes, and isinstance would fail across them)
    code = ("import sys, json\n"
            "import ember.nn.functional as F\n"
            "import ember.nn.linear\n"
            "from ember.utils.data import DataLoader\n"
            "import ember.optim.lr_scheduler\n"
            "import ember\n"
            "same = [F is sys.modules['ember.frontend.nn.functional'],\n"
            "        ember.nn.linear is sys.modules['ember.frontend.nn.linear'],\n"
            "        ember.nn.linear.Linear is ember.nn.Linear,\n"
            "        DataLoader is ember.utils.data.DataLoader,\n"
            "        sys.modules['ember.optim.lr_scheduler'] is ember.frontend.optim.lr_scheduler,\n"
            "        ember.autograd is ember.frontend.autograd]\n"
            "aliases = [m for m in sys.modules\n"
            "           if m.startswith('ember.') and m.split('.')[1] in ('nn', 'optim', 'autograd', 'utils')]\n"
            "copies = [m for m in aliases if sys.modules[m].__name__ != 'ember.frontend.' + m[len('ember.'):]]\n"
            "print(json.dumps([same, sorted(aliases), copies]))\n")
    same, aliases, copies = run_fresh(code, tmp_path)
    assert same == [True] * 6
    assert {"ember.nn.functional", "ember.nn.linear", "ember.utils.data", "ember.optim.lr_scheduler"} <= set(aliases)
    assert copies == []


def test_after_import_ember_the_submodules_are_attributes_as_in_torch(tmp_path):
    code = ("import ember, json\n"
            "print(json.dumps([ember.utils.data.DataLoader.__name__, ember.nn.functional.relu.__name__,\n"
            "                  ember.nn.init.zeros_.__name__, ember.optim.lr_scheduler.StepLR.__name__,\n"
            "                  ember.cuda.is_available(), ember.backends.mps.is_available()]))\n")
    assert run_fresh(code, tmp_path) == ["DataLoader", "relu", "zeros_", "StepLR", False, False]
