/*
 * empath.h: the API a C module of Empath is written against.
 *
 * The same names, types and meanings as the ancestor's header (Empath in Rust, empath-ffi),
 * so a module written for it builds against this one unchanged. A module is a shared library
 * exporting `declare_module()` (write it with EM_DECLARE_MODULE) and, through it, `init`; the
 * em_* functions are provided by the host when the module is loaded: build the module with
 * `cc -shared -fPIC module.c -o module.so -I <dir of this header>`, without linking any
 * library of Empath's.
 *
 * Strings the host returns are the caller's: free a String with em_free_string and a
 * StringVector with em_free_string_vector (which frees its strings too). A String with no
 * value has `data == NULL` and `len == 0`.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* What a callback is about: a session at a validation stage, or an event. Opaque. */
typedef struct Context Context;

typedef struct String {
  uintptr_t len;
  const char *data;
} String;

typedef struct StringVector {
  uintptr_t len;
  const String *data;
} StringVector;

/* The events an event listener is told of (the ancestor's order). */
typedef enum Ev {
  ConnectionOpened,
  ConnectionClosed,
  DeliveryAttempt,
  DeliverySuccess,
  DeliveryFailure,
  SmtpError,
  SmtpMessageReceived,
  DnsLookup,
} Ev;

/* Called once when the module is loaded, with the plugin's `arguments`; 0 is success. */
typedef int32_t (*Init)(StringVector);

/* A validation callback: 0 accepts, anything else refuses. NULL: not called. */
typedef int32_t (*ValidateFn)(Context *);

typedef struct Validators {
  ValidateFn validate_connect;
  ValidateFn validate_ehlo;
  ValidateFn validate_mail_from;
  ValidateFn validate_rcpt_to;
  ValidateFn validate_data;
  ValidateFn validate_starttls;
} Validators;

typedef struct Validation {
  const char *module_name;
  Init init;
  Validators validators;
} Validation;

typedef enum Mod_Tag {
  ValidationListener,
  EventListener,
} Mod_Tag;

typedef struct EventListener_Body {
  const char *module_name;
  Init init;
  int32_t (*emit)(Ev, Context *);
} EventListener_Body;

typedef struct Mod {
  Mod_Tag tag;
  union {
    struct {
      Validation validation_listener;
    };
    EventListener_Body event_listener;
  };
} Mod;

#define EM_DECLARE_MODULE(ty, ...)                                                           \
  Mod declare_module() { return (Mod){ty##Listener, {__VA_ARGS__}}; }

/* The session or message. */
String em_context_get_id(const Context *context);
String em_context_get_sender(const Context *context);
/* A new envelope sender (NULL: the null sender <>); false if it is not an address. */
bool em_context_set_sender(Context *context, const char *sender);
StringVector em_context_get_recipients(const Context *context);
String em_context_get_data(const Context *context);
/* The reply: a 4xx or 5xx refuses with it (text may start with an enhanced code). */
bool em_context_set_response(Context *context, uint32_t status, const char *response);
bool em_context_is_tls(const Context *context);
String em_context_tls_protocol(const Context *context);
String em_context_tls_cipher(const Context *context);

/* Metadata kept with the message. */
bool em_context_exists(const Context *context, const char *key);
String em_context_get(const Context *context, const char *key);
bool em_context_set(Context *context, const char *key, const char *value);

/* Delivery events. */
bool em_context_has_delivery(const Context *context);
String em_delivery_get_message_id(const Context *context);
String em_delivery_get_domain(const Context *context);
String em_delivery_get_server(const Context *context);
String em_delivery_get_error(const Context *context);
uint32_t em_delivery_get_attempts(const Context *context);

void em_free_string(String string);
void em_free_string_vector(StringVector vector);

#ifdef __cplusplus
}
#endif
