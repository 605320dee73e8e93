// `{{name}}`: a counter per document, kept across restarts and hot reloads.
//
// Protocol: a client that joins gets `{"count":N}`; each text message adds one and every
// client gets the new `{"count":N}`. `GET /docs/{{name}}/{document}` answers `{"count":N}`.
// The state is saved as the count in decimal ("7").
//
// Bindings: `build/room.h`, generated from `wit/consumer.wit` by `wit-bindgen c`.
// Ownership (wit-bindgen's C rules): the arguments of exports are ours and must be freed;
// what we return is freed by the generated post-return functions, so it must come from
// malloc; what we pass to imports stays ours.

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "room.h"

// The document's state. One instance per document: globals are per document.
static uint64_t count;

// `{"count":N}` in a malloc'ed buffer (the caller frees it or hands it to wit-bindgen).
static room_string_t count_json(void) {
    char text[40];
    int n = snprintf(text, sizeof text, "{\"count\":%llu}", (unsigned long long)count);
    room_string_t s;
    room_string_dup_n(&s, text, (size_t)n);
    return s;
}

bool exports_wasmroom_consumer_consumer_open(room_string_t *document, room_string_t *err) {
    (void)err;
    room_string_free(document);
    count = 0;
    return true;
}

void exports_wasmroom_consumer_consumer_on_connect(
    exports_wasmroom_consumer_consumer_connect_info_t *info,
    exports_wasmroom_consumer_consumer_decision_t *ret) {
    wasmroom_consumer_host_message_t msg = {.tag = WASMROOM_CONSUMER_TYPES_MESSAGE_TEXT};
    msg.val.text = count_json();
    wasmroom_consumer_host_host_error_t err;
    // Sent right after the upgrade. The error (the client already left) harms nothing.
    wasmroom_consumer_host_send(info->id, &msg, &err);
    wasmroom_consumer_host_message_free(&msg);
    ret->tag = WASMROOM_CONSUMER_TYPES_DECISION_ACCEPT;
    ret->val.accept.is_some = false;
    exports_wasmroom_consumer_consumer_connect_info_free(info);
}

void exports_wasmroom_consumer_consumer_on_message(
    exports_wasmroom_consumer_consumer_connection_id_t from,
    exports_wasmroom_consumer_consumer_message_t *msg) {
    (void)from;
    if (msg->tag == WASMROOM_CONSUMER_TYPES_MESSAGE_TEXT) {
        count++;
        wasmroom_consumer_host_message_t out = {.tag = WASMROOM_CONSUMER_TYPES_MESSAGE_TEXT};
        out.val.text = count_json();
        wasmroom_consumer_host_list_connection_id_t nobody = {NULL, 0};
        wasmroom_consumer_host_host_error_t err;
        wasmroom_consumer_host_broadcast(&out, &nobody, &err);
        wasmroom_consumer_host_message_free(&out);
    }
    exports_wasmroom_consumer_consumer_message_free(msg);
}

void exports_wasmroom_consumer_consumer_on_disconnect(
    exports_wasmroom_consumer_consumer_connection_id_t connection, uint16_t code) {
    (void)connection;
    (void)code;
}

void exports_wasmroom_consumer_consumer_on_timer(exports_wasmroom_consumer_consumer_timer_id_t id) {
    (void)id;
}

void exports_wasmroom_consumer_consumer_on_request(
    exports_wasmroom_consumer_consumer_http_request_t *request,
    exports_wasmroom_consumer_consumer_http_response_t *ret) {
    bool get = request->method.len == 3 && memcmp(request->method.ptr, "GET", 3) == 0;
    exports_wasmroom_consumer_consumer_http_request_free(request);
    *ret = (exports_wasmroom_consumer_consumer_http_response_t){.status = get ? 200 : 405};
    room_string_t body = get ? count_json() : (room_string_t){0};
    if (!get) room_string_dup(&body, "use GET");
    ret->body = (room_list_u8_t){body.ptr, body.len};
    wasmroom_consumer_types_header_t *header = malloc(sizeof *header);
    if (!header) abort();
    room_string_dup(&header->f0, "content-type");
    room_string_dup(&header->f1, get ? "application/json" : "text/plain; charset=utf-8");
    ret->headers = (wasmroom_consumer_types_list_header_t){header, 1};
}

void exports_wasmroom_consumer_consumer_snapshot(room_list_u8_t *ret) {
    char text[24];
    int n = snprintf(text, sizeof text, "%llu", (unsigned long long)count);
    uint8_t *bytes = malloc((size_t)n);
    if (!bytes) abort();
    memcpy(bytes, text, (size_t)n);
    *ret = (room_list_u8_t){bytes, (size_t)n};
}

bool exports_wasmroom_consumer_consumer_restore(room_list_u8_t *state, room_string_t *err) {
    uint64_t restored = 0;
    bool ok = true;
    for (size_t i = 0; i < state->len && ok; i++) {
        uint8_t digit = state->ptr[i];
        ok = digit >= '0' && digit <= '9' && restored <= (UINT64_MAX - 9) / 10;
        restored = restored * 10 + (uint64_t)(digit - '0');
    }
    room_list_u8_free(state);
    if (!ok) {
        room_string_dup(err, "the saved state is not a count");
        return false;
    }
    count = restored;
    return true;
}
