/*
 * A C module for Empath (and its ancestor): a validation listener that sends every message
 * with the envelope sender given as its first argument, keeping the original in the
 * message's metadata, and refuses recipients whose local part starts with its second
 * argument, with its own reply.
 *
 *   cc -shared -fPIC -O2 -I <dir of empath.h> policy.c -o /opt/empath/policy.so
 *   EMPATH_PLUGINS='[{"name": "policy", "library": "/opt/empath/policy.so",
 *                     "arguments": ["bounces@example.net", "blocked"]}]'
 */
#include <stdio.h>
#include <string.h>

#include "empath.h"

static char sender[256];
static char blocked[64];

int init(StringVector arguments) {
  if (arguments.len != 2 || arguments.data[0].len >= sizeof(sender) ||
      arguments.data[1].len >= sizeof(blocked)) {
    return 1; /* Empath does not start: the plugin's arguments are wrong */
  }
  memcpy(sender, arguments.data[0].data, arguments.data[0].len);
  memcpy(blocked, arguments.data[1].data, arguments.data[1].len);
  return 0;
}

static int mail_from(Context *context) {
  String original = em_context_get_sender(context);
  if (original.len == 0) { /* the null sender <> stays: it is a bounce */
    em_free_string(original);
    return 0;
  }
  em_context_set(context, "policy.original-sender", original.data);
  em_free_string(original);
  return em_context_set_sender(context, sender) ? 0 : 1;
}

static int rcpt_to(Context *context) {
  StringVector recipients = em_context_get_recipients(context);
  if (recipients.len == 0) {
    em_free_string_vector(recipients);
    return 0;
  }
  const String *last = &recipients.data[recipients.len - 1]; /* the one asked about */
  int refused = strncmp(last->data, blocked, strlen(blocked)) == 0;
  if (refused) {
    char reply[320];
    snprintf(reply, sizeof(reply), "5.7.1 <%s> takes no mail from here", last->data);
    em_context_set_response(context, 550, reply);
  }
  em_free_string_vector(recipients);
  return refused;
}

EM_DECLARE_MODULE(Validation, .validation_listener = {"policy", init,
                                                      {
                                                          .validate_mail_from = mail_from,
                                                          .validate_rcpt_to = rcpt_to,
                                                      }});
