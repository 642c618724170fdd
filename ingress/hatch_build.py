"""Builds `empath.ingress.cshim`, the host side of the ancestor's C module API, with the wheel.

A C module leaves its `em_*` functions undefined and expects the process loading it to define
them. This cffi extension (API mode, compiled here with the machine's C compiler) defines
each of them in C, as the header `empath.h` declares them, and hands the work to Python
callbacks (`extern "Python"`, in `empath.ingress.cmodules`); it also wraps `dlopen`, so the
service loads itself into the global scope and then each module with every symbol bound.
Compiled once, when the package is built: the image needs no compiler at run time.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PACKAGE = HERE / "src" / "empath" / "ingress"
MODULE = "empath.ingress.cshim"

# What a callback reads or writes (the same numbers in empath.ingress.cmodules).
FIELDS = {
    "ID": 0,
    "SENDER": 1,
    "DATA": 2,
    "TLS_PROTOCOL": 3,
    "TLS_CIPHER": 4,
    "GET": 5,
    "MESSAGE_ID": 6,
    "DOMAIN": 7,
    "SERVER": 8,
    "ERROR": 9,
    "IS_TLS": 10,
    "EXISTS": 11,
    "HAS_DELIVERY": 12,
    "ATTEMPTS": 13,
    "SET_SENDER": 14,
    "SET_RESPONSE": 15,
    "SET": 16,
}

CDEF = """
typedef struct Context Context;
typedef struct String { uintptr_t len; const char *data; } String;
typedef struct StringVector { uintptr_t len; const String *data; } StringVector;
typedef enum Ev { ConnectionOpened, ConnectionClosed, DeliveryAttempt, DeliverySuccess,
    DeliveryFailure, SmtpError, SmtpMessageReceived, DnsLookup } Ev;
typedef int32_t (*Init)(StringVector);
typedef int32_t (*ValidateFn)(Context *);
typedef struct Validators {
    ValidateFn validate_connect; ValidateFn validate_ehlo; ValidateFn validate_mail_from;
    ValidateFn validate_rcpt_to; ValidateFn validate_data; ValidateFn validate_starttls;
} Validators;
typedef struct Validation { const char *module_name; Init init; Validators validators; } Validation;
typedef enum Mod_Tag { ValidationListener, EventListener } Mod_Tag;
typedef struct EventListener_Body {
    const char *module_name; Init init; int32_t (*emit)(Ev, Context *);
} EventListener_Body;
typedef struct Mod {
    Mod_Tag tag;
    union { struct { Validation validation_listener; }; EventListener_Body event_listener; };
} Mod;

#define RTLD_NOW ...
#define RTLD_LOCAL ...
#define RTLD_GLOBAL ...
#define RTLD_NOLOAD ...
void *dlopen(const char *filename, int flags);
void *dlsym(void *handle, const char *symbol);
char *dlerror(void);

Mod em_host_declare(void *symbol);
int32_t em_host_init(Init init, StringVector arguments);
int32_t em_host_validate(ValidateFn validate, uintptr_t context);
int32_t em_host_emit(int32_t (*emit)(Ev, Context *), Ev event, uintptr_t context);

extern "Python" int em_py_text(uintptr_t, int, const char *, String *);
extern "Python" int em_py_recipients(uintptr_t, StringVector *);
extern "Python" uint32_t em_py_number(uintptr_t, int, const char *);
extern "Python" int em_py_set(uintptr_t, int, uint32_t, const char *, const char *);
extern "Python" void em_py_free(uintptr_t, int);
"""


def _source() -> str:
    defines = "\n".join(f"#define EM_{name} {number}" for name, number in FIELDS.items())
    return (
        '#include <dlfcn.h>\n#include "empath.h"\n'
        + defines
        + """
static int em_py_text(uintptr_t, int, const char *, String *);
static int em_py_recipients(uintptr_t, StringVector *);
static uint32_t em_py_number(uintptr_t, int, const char *);
static int em_py_set(uintptr_t, int, uint32_t, const char *, const char *);
static void em_py_free(uintptr_t, int);

Mod em_host_declare(void *symbol) { return ((Mod (*)(void))symbol)(); }
int32_t em_host_init(Init init, StringVector arguments) { return init(arguments); }
int32_t em_host_validate(ValidateFn validate, uintptr_t context) {
  return validate((Context *)context);
}
int32_t em_host_emit(int32_t (*emit)(Ev, Context *), Ev event, uintptr_t context) {
  return emit(event, (Context *)context);
}

static String em_text(const Context *context, int field, const char *key) {
  String text = {0, NULL};
  em_py_text((uintptr_t)context, field, key, &text);
  return text;
}

String em_context_get_id(const Context *c) { return em_text(c, EM_ID, NULL); }
String em_context_get_sender(const Context *c) { return em_text(c, EM_SENDER, NULL); }
String em_context_get_data(const Context *c) { return em_text(c, EM_DATA, NULL); }
String em_context_tls_protocol(const Context *c) { return em_text(c, EM_TLS_PROTOCOL, NULL); }
String em_context_tls_cipher(const Context *c) { return em_text(c, EM_TLS_CIPHER, NULL); }
String em_context_get(const Context *c, const char *key) {
  return key == NULL ? (String){0, NULL} : em_text(c, EM_GET, key);
}
String em_delivery_get_message_id(const Context *c) { return em_text(c, EM_MESSAGE_ID, NULL); }
String em_delivery_get_domain(const Context *c) { return em_text(c, EM_DOMAIN, NULL); }
String em_delivery_get_server(const Context *c) { return em_text(c, EM_SERVER, NULL); }
String em_delivery_get_error(const Context *c) { return em_text(c, EM_ERROR, NULL); }

StringVector em_context_get_recipients(const Context *c) {
  StringVector vector = {0, NULL};
  em_py_recipients((uintptr_t)c, &vector);
  return vector;
}

bool em_context_is_tls(const Context *c) { return em_py_number((uintptr_t)c, EM_IS_TLS, NULL); }
bool em_context_exists(const Context *c, const char *key) {
  return key != NULL && em_py_number((uintptr_t)c, EM_EXISTS, key);
}
bool em_context_has_delivery(const Context *c) {
  return em_py_number((uintptr_t)c, EM_HAS_DELIVERY, NULL);
}
uint32_t em_delivery_get_attempts(const Context *c) {
  return em_py_number((uintptr_t)c, EM_ATTEMPTS, NULL);
}

bool em_context_set_sender(Context *c, const char *sender) {
  return em_py_set((uintptr_t)c, EM_SET_SENDER, 0, sender, NULL);
}
bool em_context_set_response(Context *c, uint32_t status, const char *response) {
  return em_py_set((uintptr_t)c, EM_SET_RESPONSE, status, response, NULL);
}
bool em_context_set(Context *c, const char *key, const char *value) {
  return key != NULL && value != NULL && em_py_set((uintptr_t)c, EM_SET, 0, key, value);
}

void em_free_string(String string) { em_py_free((uintptr_t)string.data, 0); }
void em_free_string_vector(StringVector vector) { em_py_free((uintptr_t)vector.data, 1); }
"""
    )


def builder() -> Any:
    import cffi

    ffi = cffi.FFI()
    ffi.cdef(CDEF)
    ffi.set_source(MODULE, _source(), include_dirs=[str(PACKAGE)])
    return ffi


def compile_into(directory: Path) -> Path:
    """Compile the extension; the path of the built library, in `directory`."""
    with tempfile.TemporaryDirectory() as work:
        built = Path(builder().compile(tmpdir=work))
        target = directory / built.name
        shutil.copyfile(built, target)
    return target


try:
    from hatchling.builders.hooks.plugin.interface import BuildHookInterface
except ImportError:  # imported by something other than hatchling
    pass
else:

    class CShimHook(BuildHookInterface):  # type: ignore[type-arg]
        """Compile the shim into the package (editable installs find it there) and into
        the wheel."""

        PLUGIN_NAME = "custom"

        def initialize(self, version: str, build_data: dict[str, Any]) -> None:
            if self.target_name != "wheel":
                return
            if version == "editable":
                compile_into(PACKAGE)
            else:
                self._work = tempfile.mkdtemp(prefix="empath-cshim-")
                built = compile_into(Path(self._work))
                build_data["force_include"][str(built)] = f"empath/ingress/{built.name}"
            build_data["pure_python"] = False
            build_data["infer_tag"] = True

        def finalize(self, version: str, build_data: dict[str, Any], artifact: str) -> None:
            if getattr(self, "_work", None):
                shutil.rmtree(self._work, ignore_errors=True)


if __name__ == "__main__":  # `python ingress/hatch_build.py`: rebuild in place
    print(compile_into(PACKAGE), file=sys.stderr)
