/* json_schema.h: JSON Schema -> grammar rules (for constrained decoding) and schema queries.
 *
 * The compiler turns a schema into rules of a grammar (grammar.h) whose sentences are JSON texts
 * that match the schema. Supported: type (one or a list; object, array, string, number,
 * integer, boolean, null), properties + required (required ones are emitted, optional ones may
 * be, in schema order), additionalProperties (false, true or a schema; when absent and
 * properties are given, no extra keys are generated, which always satisfies the schema),
 * items, prefixItems, minItems/maxItems, minLength/maxLength, enum, const, anyOf, oneOf (as
 * anyOf), allOf (object members merged), $ref to "#..." JSON pointers (recursion allowed),
 * $defs/definitions, nullable, minimum >= 0 on numbers (no minus sign), true/false schemas.
 * Ignored (documented gaps): pattern, format, other numeric bounds, min/maxProperties,
 * uniqueItems, not, if/then/else, dependent*; maxItems and maxLength above 2048 (unbounded
 * then). Rejected with ERR_UNSUPPORTED: minItems/minLength above 2048, remote $ref.
 * Numbers are generated with at most 16 integer digits, 16 fraction digits and 3 exponent
 * digits, and whitespace between tokens is bounded (one space, or one newline plus up to 32
 * spaces/tabs), so a constrained model cannot run away inside a number or blank space.
 *
 * The schema is a jval tree (jval.h): the server passes its schema text, which this module
 * parses itself, so the text layer needs no JSON library. Nothing is kept after a call.
 */
#ifndef HEARTH_JSON_SCHEMA_H
#define HEARTH_JSON_SCHEMA_H

#include "../base/error.h"
#include "grammar.h"
#include "jval.h"

#include <stdint.h>

#define JSON_SCHEMA_MAX_COUNT 2048 /* largest minItems/maxItems/minLength/maxLength honoured */

/* Adds rules to g for values matching schema (a node inside the document root, which $refs are
 * resolved against) and stores the rule id in *rule. The rule matches the value only, with no
 * whitespace around it. Returns 0, or JSON_SCHEMA_NEVER when no value can match (a false
 * schema, an empty enum, a required property that cannot exist; *rule is then untouched and g
 * still consistent), or ERR_INVALID for a malformed schema, ERR_UNSUPPORTED (see above),
 * ERR_NOMEM; the message names the schema location ("at #/properties/x"). After an error g may
 * hold incomplete rules: free it. */
#define JSON_SCHEMA_NEVER 1
int json_schema_compile(struct grammar *g, const struct jval *root, const struct jval *schema,
                        int32_t *rule, struct error *err);

/* Adds the rules of any JSON value (object, array, string, number, true, false, null) and
 * returns the rule id; object_only: only objects (response_format json_object). */
int32_t json_schema_any_value(struct grammar *g, int object_only);

/* A finished grammar for schema_text (root = one value matching it, nothing around it). */
int json_schema_grammar(struct grammar **out, const char *schema_text, size_t len,
                        struct error *err);

/* The JSON types a value matching schema may have, as a mask of JSON_SCHEMA_T_* bits ($ref,
 * anyOf/oneOf, enum and const are followed; allOf intersects). A schema that says nothing
 * about types gives JSON_SCHEMA_T_ANY. Never fails; unresolvable parts count as ANY. */
enum {
    JSON_SCHEMA_T_NULL = 1,
    JSON_SCHEMA_T_BOOLEAN = 2,
    JSON_SCHEMA_T_INTEGER = 4,
    JSON_SCHEMA_T_NUMBER = 8, /* also admits integers */
    JSON_SCHEMA_T_STRING = 16,
    JSON_SCHEMA_T_ARRAY = 32,
    JSON_SCHEMA_T_OBJECT = 64,
    JSON_SCHEMA_T_ANY = 127,
};
unsigned json_schema_types(const struct jval *root, const struct jval *schema);
/* Follows $ref chains (at most 32 steps); returns the target, or schema itself when it has no
 * $ref, or NULL for an unresolvable reference. */
const struct jval *json_schema_resolve(const struct jval *root, const struct jval *schema);
/* The subschema of an object schema's property key (looks through $ref and allOf), or NULL. */
const struct jval *json_schema_property(const struct jval *root, const struct jval *schema,
                                        const char *key);

#endif
