/* An event listener for the tests: appends a line per event to the file named by its first
 * argument: the event, the message id, and for deliveries domain, server, attempts and error,
 * then the metadata "policy.original-sender". */
#include <stdio.h>
#include <string.h>

#include "empath.h"

static char path[1024];

int init(StringVector arguments) {
  if (arguments.len != 1 || arguments.data[0].len >= sizeof(path)) return 1;
  memcpy(path, arguments.data[0].data, arguments.data[0].len);
  return 0;
}

static const char *or_dash(const String *s) { return s->data ? s->data : "-"; }

int emit(Ev event, Context *context) {
  FILE *out = fopen(path, "a");
  if (out == NULL) return 1;
  String id = em_context_get_id(context);
  String tag = em_context_get(context, "policy.original-sender");
  fprintf(out, "%d %s", (int)event, or_dash(&id));
  if (em_context_has_delivery(context)) {
    String domain = em_delivery_get_domain(context);
    String server = em_delivery_get_server(context);
    String error = em_delivery_get_error(context);
    String message = em_delivery_get_message_id(context);
    fprintf(out, " delivery=%s,%s,%s,%u,%s", or_dash(&message), or_dash(&domain),
            or_dash(&server), em_delivery_get_attempts(context), or_dash(&error));
    em_free_string(domain);
    em_free_string(server);
    em_free_string(error);
    em_free_string(message);
  }
  fprintf(out, " tag=%s\n", or_dash(&tag));
  fclose(out);
  em_free_string(id);
  em_free_string(tag);
  em_free_string(tag); /* twice: the host ignores what it no longer holds */
  return 0;
}

EM_DECLARE_MODULE(Event, .event_listener = {"events", init, emit});
