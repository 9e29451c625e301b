/* err.c - tables generated from ENGAGE_ERRORS in err.h. */
#include "err.h"

#include <stdarg.h>
#include <stdio.h>

static const char *const err_desc[] = {
#define X_(name, desc, reason) desc,
    ENGAGE_ERRORS(X_)
#undef X_
};
static const char *const err_names[] = {
#define X_(name, desc, reason) #name,
    ENGAGE_ERRORS(X_)
#undef X_
};
static const char *const err_reasons[] = {
#define X_(name, desc, reason) reason,
    ENGAGE_ERRORS(X_)
#undef X_
};

const char *engage_err2str(engage_err_t err) {
    if ((int)err < 0 || err >= ENGAGE_ERR__COUNT)
        return "unknown error";
    return err_desc[err];
}

const char *engage_err_name(engage_err_t err) {
    if ((int)err < 0 || err >= ENGAGE_ERR__COUNT)
        return "UNKNOWN";
    return err_names[err];
}

const char *engage_err_dl_reason(engage_err_t err) {
    if ((int)err < 0 || err >= ENGAGE_ERR__COUNT)
        return NULL;
    return err_reasons[err];
}

engage_err_t engage_seterr(engage_err_t err, char *errstr, size_t errstr_size,
                           const char *fmt, ...) {
    if (errstr && errstr_size > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(errstr, errstr_size, fmt, ap);
        va_end(ap);
    }
    return err;
}
