"""The C API of an exported library: its header and the C source of its wrapper, generated from
an `ExportSpec` (compiler/export/library.py builds the spec and links the result).

The wrapper owns what the compiled programs (compiler/cpu/program.py) leave to their caller:
it checks the CPU's features, finds the weights (embedded, or a safetensors file checked by
size and CRC-32), allocates each instance's arena, fills the entry's table (head, then one
cell per external buffer holding its data pointer: the table's data offset is 0), splits a
dynamic batch into chunks of the compiled batch sizes, copies results that are inputs or
weights, and turns every failure into an error code with a message.
"""
import re

import numpy as np

C_TYPES = {"float32": "float", "float64": "double", "float16": "uint16_t", "bfloat16": "uint16_t",
           "int64": "int64_t", "int32": "int32_t", "int16": "int16_t", "int8": "int8_t", "uint8": "uint8_t",
           "bool": "uint8_t"}
MAX_RANK = 8
STATUS_CODES = (("OK", 0, "success"), ("ERROR_ARGUMENT", 1, "a bad argument (NULL pointer, batch, index)"),
                ("ERROR_WEIGHTS", 2, "the weights file is missing, unreadable, or not this library's"),
                ("ERROR_CPU", 3, "this CPU lacks an instruction set extension the code was compiled for"),
                ("ERROR_MEMORY", 4, "out of memory"),
                ("ERROR_RUNTIME", 5, "the program failed a check (an index out of range, ...)"))


API_FUNCTIONS = ("create", "run", "run_buffers", "set_num_threads", "destroy", "last_error", "num_inputs",
                 "num_outputs", "input_name", "output_name", "input_dtype", "output_dtype", "input_rank",
                 "output_rank", "input_dim", "output_dim")


def api_functions(name):
    """The symbols an exported library exports: its API, nothing else."""
    return [f"{name}_{function}" for function in API_FUNCTIONS]


def c_string(text):
    """`text` as a C string literal."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


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
/* The message of the last error of `model`, or with NULL, of the last failed {n}_create on this thread. */
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


def source(spec):
    """NAME.c: the wrapper around the programs' entries."""
    n, up = spec.name, spec.name.upper()
    parts = [f"""/* {n}.c: ember's generated wrapper around the compiled programs of `{n}` (see {n}.h). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "{n}.h"

#define ARENA_ALIGN 64
#define HEAD 5 /* arena, callback, timings, threads, data offset */
"""]
    parts.append(_tensor_tables(spec))
    parts.append(_weights_part(spec))
    parts.append(_programs_part(spec))
    parts.append(_features_part(spec))
    parts.append(_lifecycle_part(spec))
    parts.append(_run_part(spec))
    return re.sub(r"\bPREFIX_", f"{up}_", re.sub(r"\bNAME", n, "\n".join(parts)))


def _array(ctype, name, values):
    body = ", ".join(values) if values else "0"
    return f"static const {ctype} {name}[] = {{{body}}};"


def _tensor_tables(spec):
    lines = []
    for kind, tensors in (("input", spec.inputs), ("output", spec.outputs)):
        lines.append(_array("char *const", f"{kind}_names", [c_string(t.name) for t in tensors]))
        lines.append(_array("char *const", f"{kind}_dtypes", [c_string(t.dtype) for t in tensors]))
        lines.append(_array("int", f"{kind}_ranks", [str(len(t.shape)) for t in tensors]))
        dims = [", ".join("-1" if d is None else str(d) for d in t.shape) or "0" for t in tensors]
        lines.append(f"static const int64_t {kind}_dims[][{MAX_RANK}] = {{{', '.join('{' + d + '}' for d in dims) or '{0}'}}};")
        # bytes of one batch row (dynamic) or of the whole tensor (static)
        lines.append(_array("size_t", f"{kind}_row_bytes", [str(t.row_bytes) for t in tensors]))
    lines.append(f"#define NUM_INPUTS {len(spec.inputs)}\n#define NUM_OUTPUTS {len(spec.outputs)}")
    return "\n".join(lines) + "\n"


def _weights_part(spec):
    w = spec.weights
    lines = [f"#define WEIGHTS_BYTES ((size_t){w.nbytes})", f"#define WEIGHTS_CRC32 0x{w.crc32:08x}u"]
    if not spec.weights_file:
        lines.append("extern const unsigned char NAME_weights_data[]; /* NAME_weights.s */")
    else:
        lines.append(f"#define WEIGHTS_DATA_START ((size_t){w.data_start}) /* after the safetensors header */")
    lines.append("""
static uint32_t crc32_of(const unsigned char *data, size_t size) { /* CRC-32 as zlib's crc32 */
    uint32_t table[256];
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        table[i] = c;
    }
    uint32_t crc = 0xFFFFFFFFu;
    for (size_t i = 0; i < size; i++) crc = table[(crc ^ data[i]) & 0xFF] ^ (crc >> 8);
    return crc ^ 0xFFFFFFFFu;
}""")
    return "\n".join(lines) + "\n"


def _programs_part(spec):
    """One table per compiled program: what each external buffer of its entry is."""
    lines = ["/* An external buffer of a program: an input's or output's rows, a weight, or a constant. */",
             "enum { EXT_INPUT, EXT_OUTPUT, EXT_WEIGHT, EXT_CONSTANT };",
             "typedef struct { int kind; int index; size_t offset; size_t nbytes; } external_t;",
             "typedef struct { const char *kind; const char *message; } failure_t;",
             "typedef struct { int kind; int index; size_t offset; } result_t; /* where output i comes from */",
             "typedef struct {",
             "    int64_t batch; int (*entry)(void **); size_t arena_bytes;",
             "    int num_externals; const external_t *externals; const result_t *results;",
             "    int num_failures; const failure_t *failures;",
             "} program_t;", ""]
    for p, program in enumerate(spec.programs):
        lines.append(f"int {program.entry}(void **table);")
        rows = [f"{{{_EXT_KIND[kind]}, {index}, {offset}, {nbytes}}}" for kind, index, offset, nbytes in program.externals]
        lines.append(_array("external_t", f"program{p}_externals", rows))
        rows = [f"{{{_EXT_KIND[kind]}, {index}, {offset}}}" for kind, index, offset in program.results]
        lines.append(_array("result_t", f"program{p}_results", rows))
        rows = [f"{{{c_string(kind)}, {c_string(message)}}}" for kind, message in program.failures]
        lines.append(_array("failure_t", f"program{p}_failures", rows))
    lines.append("static const program_t programs[] = {")
    for p, program in enumerate(spec.programs):
        lines.append(f"    {{{program.batch}, {program.entry}, {program.arena_bytes}, {len(program.externals)}, "
                     f"program{p}_externals, program{p}_results, {len(program.failures)}, program{p}_failures}},")
    lines.append("};")
    lines.append(f"#define NUM_PROGRAMS {len(spec.programs)} /* largest batch first */")
    # constants: the bytes of each, written out (small: simplify folds at most a few thousand elements)
    constants = spec.constants
    lines.append(f"#define NUM_CONSTANTS {len(constants)}")
    for k, data in enumerate(constants):
        lines.append(_array("unsigned char", f"constant{k}", [str(b) for b in data]))
    lines.append(_array("unsigned char *const", "constants", [f"constant{k}" for k in range(len(constants))]))
    return "\n".join(lines) + "\n"


_EXT_KIND = {"input": "EXT_INPUT", "output": "EXT_OUTPUT", "weight": "EXT_WEIGHT", "constant": "EXT_CONSTANT"}


def _features_part(spec):
    checks = "\n".join(f'    if (!__builtin_cpu_supports("{f}")) return "{f}";' for f in spec.features)
    return f"""/* The first instruction set extension the code needs that this CPU lacks, or NULL.
   Compiled for: {spec.cpu}. */
static const char *missing_cpu_feature(void) {{
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    __builtin_cpu_init();
{checks}
#endif
    return NULL;
}}
"""


def _lifecycle_part(spec):
    file_mode = bool(spec.weights_file)
    load = ("""    if (!weights_path) return fail(NULL, PREFIX_ERROR_WEIGHTS, "NAME_create: NAME was exported with its weights in a file (%s); pass its path", WEIGHTS_FILE);
    FILE *f = fopen(weights_path, "rb");
    if (!f) return fail(NULL, PREFIX_ERROR_WEIGHTS, "NAME_create: cannot open the weights file %s", weights_path);
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    if (size < 0 || (size_t)size != WEIGHTS_DATA_START + WEIGHTS_BYTES) {
        fclose(f);
        return fail(NULL, PREFIX_ERROR_WEIGHTS, "NAME_create: %s has %ld bytes; NAME's weights file has %zu", weights_path, size, WEIGHTS_DATA_START + WEIGHTS_BYTES);
    }
    unsigned char *owned = NULL;
    if (posix_memalign((void **)&owned, ARENA_ALIGN, WEIGHTS_BYTES ? WEIGHTS_BYTES : 1)) { fclose(f); return fail(NULL, PREFIX_ERROR_MEMORY, "NAME_create: no memory for %zu bytes of weights", WEIGHTS_BYTES); }
    fseek(f, (long)WEIGHTS_DATA_START, SEEK_SET);
    size_t got = fread(owned, 1, WEIGHTS_BYTES, f);
    fclose(f);
    if (got != WEIGHTS_BYTES || crc32_of(owned, WEIGHTS_BYTES) != WEIGHTS_CRC32) {
        free(owned);
        return fail(NULL, PREFIX_ERROR_WEIGHTS, "NAME_create: %s is not NAME's weights file (its contents do not match the checksum the library holds)", weights_path);
    }
    const unsigned char *weights = owned;
""" if file_mode else """    if (weights_path) return fail(NULL, PREFIX_ERROR_WEIGHTS, "NAME_create: NAME holds its weights inside the library; pass NULL, not %s", weights_path);
    unsigned char *owned = NULL;
    const unsigned char *weights = NAME_weights_data;
""")
    weights_file = f'#define WEIGHTS_FILE {c_string(spec.weights_file or "")}\n' if file_mode else ""
    return weights_file + """
struct NAME_instance {
    const unsigned char *weights;
    unsigned char *owned_weights;
    unsigned char *arena;
    int threads;
    char error[1024];
};

static _Thread_local char create_error[1024];

#include <stdarg.h>
static int fail(NAME_t *model, int code, const char *format, ...) {
    va_list args;
    va_start(args, format);
    vsnprintf(model ? model->error : create_error, sizeof create_error, format, args);
    va_end(args);
    return code;
}

int NAME_create(const char *weights_path, NAME_t **out) {
    if (!out) return fail(NULL, PREFIX_ERROR_ARGUMENT, "NAME_create: `out` is NULL");
    *out = NULL;
    const char *missing = missing_cpu_feature();
    if (missing) return fail(NULL, PREFIX_ERROR_CPU, "NAME_create: this CPU lacks %s, which NAME's code (compiled for %s) uses; export it again with a lower --cpu (x86-64-v2, x86-64-v3)", missing, CPU_NAME);
""".replace("CPU_NAME", c_string(spec.cpu)) + load + """    size_t arena_bytes = 0;
    for (int p = 0; p < NUM_PROGRAMS; p++) if (programs[p].arena_bytes > arena_bytes) arena_bytes = programs[p].arena_bytes;
    NAME_t *model = calloc(1, sizeof *model);
    unsigned char *arena = NULL;
    if (!model || posix_memalign((void **)&arena, ARENA_ALIGN, arena_bytes ? arena_bytes : ARENA_ALIGN)) {
        free(model); free(owned);
        return fail(NULL, PREFIX_ERROR_MEMORY, "NAME_create: no memory for the %zu-byte arena", arena_bytes);
    }
    model->weights = weights;
    model->owned_weights = owned;
    model->arena = arena;
    model->threads = DEFAULT_THREADS;
    *out = model;
    return PREFIX_OK;
}

void NAME_destroy(NAME_t *model) {
    if (!model) return;
    free(model->arena);
    free(model->owned_weights);
    free(model);
}

const char *NAME_last_error(const NAME_t *model) { return model ? model->error : create_error; }

int NAME_set_num_threads(NAME_t *model, int threads) {
    if (!model) return fail(NULL, PREFIX_ERROR_ARGUMENT, "NAME_set_num_threads: `model` is NULL");
    if (threads < 1) return fail(model, PREFIX_ERROR_ARGUMENT, "NAME_set_num_threads: %d threads; give at least 1", threads);
    model->threads = threads;
    return PREFIX_OK;
}

int NAME_num_inputs(void) { return NUM_INPUTS; }
int NAME_num_outputs(void) { return NUM_OUTPUTS; }
const char *NAME_input_name(int i) { return i >= 0 && i < NUM_INPUTS ? input_names[i] : NULL; }
const char *NAME_output_name(int i) { return i >= 0 && i < NUM_OUTPUTS ? output_names[i] : NULL; }
const char *NAME_input_dtype(int i) { return i >= 0 && i < NUM_INPUTS ? input_dtypes[i] : NULL; }
const char *NAME_output_dtype(int i) { return i >= 0 && i < NUM_OUTPUTS ? output_dtypes[i] : NULL; }
int NAME_input_rank(int i) { return i >= 0 && i < NUM_INPUTS ? input_ranks[i] : -1; }
int NAME_output_rank(int i) { return i >= 0 && i < NUM_OUTPUTS ? output_ranks[i] : -1; }
int64_t NAME_input_dim(int i, int d) { return i >= 0 && i < NUM_INPUTS && d >= 0 && d < input_ranks[i] ? input_dims[i][d] : 0; }
int64_t NAME_output_dim(int i, int d) { return i >= 0 && i < NUM_OUTPUTS && d >= 0 && d < output_ranks[i] ? output_dims[i][d] : 0; }
""".replace("DEFAULT_THREADS", str(spec.threads))


def _run_part(spec):
    args = ", ".join([f"const {C_TYPES[t.dtype]} *{t.name}" for t in spec.inputs]
                     + [f"{C_TYPES[t.dtype]} *{t.name}" for t in spec.outputs])
    input_list = ", ".join(t.name for t in spec.inputs) or "NULL"
    output_list = ", ".join(t.name for t in spec.outputs) or "NULL"
    batch_check = ("    if (batch < 1) return fail(model, PREFIX_ERROR_ARGUMENT, \"NAME_run: batch %lld; give at least 1 row\", (long long)batch);"
                   if spec.dynamic else
                   f"    if (batch != {spec.batch}) return fail(model, PREFIX_ERROR_ARGUMENT, \"NAME_run: batch %lld; NAME was exported for batch {spec.batch} (export it with dynamic_batch=True for any size)\", (long long)batch);")
    return f"""
/* One call of program p on rows [row, row + p.batch) of the inputs and outputs. */
static int run_program(NAME_t *model, const program_t *program, const void *const *inputs, void *const *outputs, int64_t row) {{
    void *table[HEAD + {max((len(p.externals) for p in spec.programs), default=0)} + 1];
    void *cells[{max((len(p.externals) for p in spec.programs), default=0)} + 1];
    table[0] = model->arena;
    table[1] = NULL; /* no Python callbacks in an exported program */
    table[2] = NULL; /* no kernel timers */
    table[3] = (void *)(intptr_t)model->threads;
    table[4] = (void *)0; /* data offset: each cell holds its buffer's data pointer */
    for (int k = 0; k < program->num_externals; k++) {{
        const external_t *e = &program->externals[k];
        switch (e->kind) {{
        case EXT_INPUT: cells[k] = (char *)inputs[e->index] + row * input_row_bytes[e->index]; break;
        case EXT_OUTPUT: cells[k] = (char *)outputs[e->index] + row * output_row_bytes[e->index]; break;
        case EXT_WEIGHT: cells[k] = (void *)(model->weights + e->offset); break;
        default: cells[k] = (void *)constants[e->index]; break;
        }}
        table[HEAD + k] = &cells[k];
    }}
    int status = program->entry(table);
    if (status) {{
        if (status > 0 && status <= program->num_failures)
            return fail(model, PREFIX_ERROR_RUNTIME, "NAME_run: %s: %s", program->failures[status - 1].kind, program->failures[status - 1].message);
        return fail(model, PREFIX_ERROR_RUNTIME, "NAME_run: the program failed with status %d", status);
    }}
    /* outputs that are not computed: an input, a weight, a constant, or a second copy */
    for (int i = 0; i < NUM_OUTPUTS; i++) {{
        const result_t *r = &program->results[i];
        char *target = (char *)outputs[i] + row * output_row_bytes[i];
        size_t bytes = output_row_bytes[i] * (size_t)({"program->batch" if spec.dynamic else "1"});
        switch (r->kind) {{
        case EXT_INPUT: memcpy(target, (const char *)inputs[r->index] + row * input_row_bytes[r->index], bytes); break;
        case EXT_WEIGHT: memcpy(target, model->weights + r->offset, bytes); break;
        case EXT_CONSTANT: memcpy(target, constants[r->index], bytes); break;
        default: if (r->index != i) memcpy(target, (char *)outputs[r->index] + row * output_row_bytes[r->index], bytes); break;
        }}
    }}
    return PREFIX_OK;
}}

int NAME_run_buffers(NAME_t *model, const void *const *inputs, void *const *outputs, int64_t batch) {{
    if (!model) return fail(NULL, PREFIX_ERROR_ARGUMENT, "NAME_run: `model` is NULL");
    if ((NUM_INPUTS && !inputs) || (NUM_OUTPUTS && !outputs)) return fail(model, PREFIX_ERROR_ARGUMENT, "NAME_run: the input or output array is NULL");
    for (int i = 0; i < NUM_INPUTS; i++) if (!inputs[i]) return fail(model, PREFIX_ERROR_ARGUMENT, "NAME_run: input %d (%s) is NULL", i, input_names[i]);
    for (int i = 0; i < NUM_OUTPUTS; i++) if (!outputs[i]) return fail(model, PREFIX_ERROR_ARGUMENT, "NAME_run: output %d (%s) is NULL", i, output_names[i]);
{batch_check}
    int64_t row = 0;
    for (int p = 0; p < NUM_PROGRAMS; p++) {{ /* largest chunks first */
        while (batch - row >= programs[p].batch) {{
            int status = run_program(model, &programs[p], inputs, outputs, {"row" if spec.dynamic else "0"});
            if (status) return status;
            row += programs[p].batch;
        }}
    }}
    return PREFIX_OK;
}}

int NAME_run(NAME_t *model, {args}, int64_t batch) {{
    const void *inputs[] = {{{input_list}}};
    void *outputs[] = {{{output_list}}};
    return NAME_run_buffers(model, inputs, outputs, batch);
}}
"""


def fill_bytes(value, shape, dtype):
    """The bytes of a constant external: `value` broadcast to `shape` in `dtype`."""
    return np.ascontiguousarray(np.broadcast_to(np.asarray(value), tuple(shape)), dtype=dtype).tobytes()
