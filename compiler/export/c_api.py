"""The C API of an exported library: the header NAME.h, generated from an `ExportSpec`
(compiler/export/library.py), with the status codes and C types the wrapper behind it
(compiler/export/wrapper.py) uses.
"""
import numpy as np

C_TYPES = {"float32": "float", "float64": "double", "float16": "uint16_t", "bfloat16": "uint16_t",
           "int64": "int64_t", "int32": "int32_t", "int16": "int16_t", "int8": "int8_t", "uint8": "uint8_t",
           "bool": "uint8_t"}
STATUS_CODES = (("OK", 0, "success"), ("ERROR_ARGUMENT", 1, "a bad argument (NULL pointer, batch, index)"),
                ("ERROR_WEIGHTS", 2, "the weights file is missing, unreadable, or not this library's"),
                ("ERROR_CPU", 3, "this CPU lacks an instruction set extension the code was compiled for"),
                ("ERROR_MEMORY", 4, "out of memory"),
                ("ERROR_RUNTIME", 5, "the program failed a check (an index out of range, ...)"))
STATUS = {code: value for code, value, _ in STATUS_CODES}


API_FUNCTIONS = ("create", "run", "run_buffers", "set_num_threads", "destroy", "last_error", "num_inputs",
                 "num_outputs", "input_name", "output_name", "input_dtype", "output_dtype", "input_rank",
                 "output_rank", "input_dim", "output_dim")


def api_functions(name):
    """The symbols an exported library exports: its API, nothing else."""
    return [f"{name}_{function}" for function in API_FUNCTIONS]


def header(spec):
    """NAME.h: the API, with the model's inputs and outputs spelled out in comments."""
    n, up = spec.name, spec.name.upper()
    codes = "\n".join(f"#define {up}_{code} {value} /* {what} */" for code, value, what in STATUS_CODES)
    inputs = ", ".join(f"const {C_TYPES[t.dtype]} *{t.name}" for t in spec.inputs)
    outputs = ", ".join(f"{C_TYPES[t.dtype]} *{t.name}" for t in spec.outputs)
    batch = ("any batch size >= 1 (dim 0 of every input and output)" if spec.dynamic
             else f"the batch must be {spec.batch} (the library was exported for that size)")

    def describe(tensors):
        return "\n".join(f" *   {t.name}: {t.dtype}[{', '.join('batch' if d is None else str(d) for d in t.shape)}]"
                         for t in tensors)
    return f"""/* {n}.h: the C API of the model `{n}`, exported by ember {spec.version}.
 *
 * Inputs (row-major, C-contiguous):
{describe(spec.inputs)}
 * Outputs:
{describe(spec.outputs)}
 * Batch: {batch}.
 *
 * Every function returns {up}_OK (0) or an error code; {n}_last_error says what went wrong.
 * One instance runs one call at a time; use one instance per thread for concurrent calls.
 */
#ifndef {up}_H
#define {up}_H
#include <stdint.h>
#ifdef __cplusplus
extern "C" {{
#endif

{codes}

typedef struct {n}_instance {n}_t;

/* Create an instance. `weights_path` is the weights file ({spec.weights_file or "NULL: the weights are inside the library"}). */
int {n}_create(const char *weights_path, {n}_t **out);
/* Run the model on `batch` rows. */
int {n}_run({n}_t *model, {inputs}, {outputs}, int64_t batch);
/* The same, with inputs and outputs as arrays of pointers in the order above. */
int {n}_run_buffers({n}_t *model, const void *const *inputs, void *const *outputs, int64_t batch);
/* Threads the next calls may use (>= 1). */
int {n}_set_num_threads({n}_t *model, int threads);
void {n}_destroy({n}_t *model);
/* The message of the last error of `model`; with NULL, of the last call on this thread that failed
   without a model ({n}_create, or a call given a NULL model). */
const char *{n}_last_error(const {n}_t *model);

/* Shapes: -1 stands for the batch. Names and dtypes as in manifest.json. */
int {n}_num_inputs(void);
int {n}_num_outputs(void);
const char *{n}_input_name(int index);
const char *{n}_output_name(int index);
const char *{n}_input_dtype(int index);
const char *{n}_output_dtype(int index);
int {n}_input_rank(int index);
int {n}_output_rank(int index);
int64_t {n}_input_dim(int index, int dim);
int64_t {n}_output_dim(int index, int dim);

#ifdef __cplusplus
}}
#endif
#endif
"""


def fill_bytes(value, shape, dtype):
    """The bytes of a constant external: `value` broadcast to `shape` in `dtype`."""
    return np.ascontiguousarray(np.broadcast_to(np.asarray(value), tuple(shape)), dtype=dtype).tobytes()
