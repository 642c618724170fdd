/* A validation listener that takes its time at MAIL FROM (as a module stuck on a lookup). */
#include <unistd.h>

#include "empath.h"

static int mail_from(Context *context) {
  (void)context;
  sleep(10);
  return 0;
}

EM_DECLARE_MODULE(Validation, .validation_listener = {"slow", NULL, {.validate_mail_from = mail_from}});
