/* test_chat_template.c: the Jinja2 chat-template engine (src/text/chat_template.h).
 *
 * chat_template_golden renders every ../shared/models/templates/<name>.jinja with every context of
 * tests/data/chat_templates/cases.json and compares byte for byte with what Python Jinja2 gave
 * (tests/data/chat_templates/expected/, made by tools/gen_template_renders.py). The other tests
 * pin single features; their expected strings were produced by Jinja2 3.1 in the HF chat
 * template environment.
 */
#include "test.h"

#include "../src/base/buf.h"
#include "../src/base/mem.h"
#include "../src/text/chat_template.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifndef NO_JANSSON
#include <jansson.h>
#endif

#define DATA_DIR "tests/data/chat_templates"

/* ---- helpers ------------------------------------------------------------------------------ */

/* Renders src with ctx (may be NULL); returns the text (caller frees) or NULL with *code/err. */
static char *render_opts(const char *src, const struct tpl_value *ctx,
                         const struct chat_template_opts *opts, int *code, struct error *err) {
    struct chat_template *t;
    struct error e0 = {0};
    if (!err) err = &e0;
    *code = chat_template_parse(&t, src, strlen(src), err);
    if (*code) return NULL;
    struct buf out;
    buf_init(&out);
    *code = chat_template_render_opts(t, ctx, opts, &out, err);
    chat_template_free(t);
    if (*code) {
        buf_free(&out);
        return NULL;
    }
    return buf_detach(&out);
}

static char *render(const char *src, const struct tpl_value *ctx, int *code, struct error *err) {
    return render_opts(src, ctx, NULL, code, err);
}

/* Prints where got and want first differ, with some context on both sides. */
static void show_diff(const char *what, const char *got, size_t got_n, const char *want,
                      size_t want_n) {
    size_t i = 0;
    while (i < got_n && i < want_n && got[i] == want[i]) i++;
    size_t from = i > 40 ? i - 40 : 0;
    printf("    %s: first difference at byte %zu (got %zu bytes, want %zu)\n", what, i, got_n,
           want_n);
    for (int side = 0; side < 2; side++) {
        const char *s = side ? want : got;
        size_t n = side ? want_n : got_n, to = i + 40 < n ? i + 40 : n;
        printf("      %s: \"", side ? "want" : "got ");
        for (size_t k = from; k < to; k++) {
            unsigned char c = (unsigned char)s[k];
            if (c == '\n')
                printf("\\n");
            else if (c < 0x20 || c == '"' || c == '\\')
                printf("\\x%02x", c);
            else
                putchar(c);
        }
        printf("\"\n");
    }
}

#define UNUSED_EXPECT_RENDER(src, want)                                                            \
    do {                                                                                           \
        int code_;                                                                                 \
        struct error err_ = {0};                                                                   \
        char *got_ = render((src), NULL, &code_, &err_);                                           \
        if (!got_) {                                                                               \
            test_fail(__FILE__, __LINE__, "%s: error %d: %s", (src), code_, err_.msg);             \
        } else if (strcmp(got_, (want)) != 0) {                                                    \
            test_fail(__FILE__, __LINE__, "%s", (src));                                            \
            show_diff("render", got_, strlen(got_), (want), strlen(want));                         \
        }                                                                                          \
        mem_free(got_);                                                                            \
    } while (0)

/* ---- feature tables: template -> Jinja2's render ------------------------------------------ */

/* Every template renders with this context: d = {'a': 1, 'items': 'I'}, n = None and four
 * messages (system, user, assistant, user) whose content is 'hi'. Expected strings were rendered
 * by Python Jinja2 3.1.2 in transformers' chat-template environment. */
struct render_case {
    const char *src, *want;
};

static struct tpl_value *unit_context(struct tpl_arena *a) {
    struct tpl_value *ctx = tpl_value_object(a), *d = tpl_value_object(a),
                     *msgs = tpl_value_array(a);
    tpl_object_set(a, d, "a", 1, tpl_value_int(a, 1));
    tpl_object_set(a, d, "items", 5, tpl_value_string(a, "I", 1));
    static const char *const roles[] = {"system", "user", "assistant", "user"};
    for (int i = 0; i < 4; i++) {
        struct tpl_value *m = tpl_value_object(a);
        tpl_object_set(a, m, "role", 4, tpl_value_string(a, roles[i], strlen(roles[i])));
        tpl_object_set(a, m, "content", 7, tpl_value_string(a, "hi", 2));
        tpl_array_push(a, msgs, m);
    }
    tpl_object_set(a, ctx, "d", 1, d);
    tpl_object_set(a, ctx, "messages", 8, msgs);
    tpl_object_set(a, ctx, "n", 1, tpl_value_none());
    return ctx;
}

static void check_cases(const char *file, int line, const struct render_case *cases, size_t n) {
    struct tpl_arena *a = tpl_arena_create(0);
    struct tpl_value *ctx = unit_context(a);
    for (size_t i = 0; i < n; i++) {
        int code;
        struct error err = {0};
        char *got = render(cases[i].src, ctx, &code, &err);
        if (!got) {
            test_fail(file, line, "case %zu: %s: error %d: %s", i, cases[i].src, code, err.msg);
            continue;
        }
        if (strcmp(got, cases[i].want) != 0) {
            test_fail(file, line, "case %zu: %s", i, cases[i].src);
            show_diff("render", got, strlen(got), cases[i].want, strlen(cases[i].want));
        }
        mem_free(got);
    }
    tpl_arena_free(a);
}

#define CHECK_CASES(table) check_cases(__FILE__, __LINE__, table, sizeof(table) / sizeof(table[0]))

static const struct render_case k_expressions[] = {
    {"{{ 1 + 2 * 3 }}|{{ (1 + 2) * 3 }}|{{ 7 / 2 }}|{{ 7 // 2 }}|{{ -7 // 2 }}|{{ -7 % 3 }}|{{ 2 "
     "** 10 }}|{{ 2 ** -1 }}|{{ 10 - 2 - 3 }}",
     "7|9|3.5|3|-4|2|1024|0.5|5"},
    {"{{ 7.5 // 2 }}|{{ -7.5 % 2 }}|{{ 1.5 + 1 }}|{{ true + 1 }}|{{ -(1 + 2) }}|{{ +4 }}|{{ -1|abs "
     "}}",
     "3.0|0.5|2.5|2|-3|4|1"},
    {"{{ 'a' ~ 1 ~ 1.0 ~ none ~ true }}|{{ 'ab' * 2 }}|{{ [1] * 2 }}|{{ [1] + [2] }}|{{ (1,) + "
     "(2,) }}",
     "a11.0NoneTrue|abab|[1, 1]|[1, 2]|(1, 2)"},
    {"{{ 1 == 1.0 }}|{{ [1] == (1,) }}|{{ {'a': 1, 'b': 2} == {'b': 2, 'a': 1} }}|{{ 1 < 2 < 3 "
     "}}|{{ 3 > 2 > 2 }}|{{ [1, 2] < [1, 3] }}|{{ 'Z' < 'a' }}",
     "True|False|True|True|False|True|True"},
    {"{{ 'a' in 'abc' }}|{{ 'd' not in 'abc' }}|{{ 1 in [1, 2] }}|{{ 'a' in {'a': 1} }}|{{ '' in "
     "'x' }}|{{ x in [1] }}|{{ 'a' in x }}",
     "True|True|True|True|True|False|False"},
    {"{{ 1 and 2 }}|{{ 0 and 2 }}|{{ 1 or 2 }}|{{ none or 'x' }}|{{ not [] }}|{{ not 'a' in 'abc' "
     "}}|{{ not 1 == 2 }}",
     "2|0|1|x|True|False|True"},
    {"{{ 'y' if true else 'n' }}|{{ 'y' if 0 else 'n' }}|{{ 'a' if false }}|{{ 1 if 0 else 2 if 0 "
     "else 3 }}",
     "y|n||3"},
    {"{{ 'abc' ~ 'def' | upper }}|{{ 'x' + 'y' | upper }}|{{ [1, 2] | length + 1 }}|{{ 2 * 3 ~ 4 "
     "}}",
     "abcDEF|xY|3|64"},
    {"{{ 0x1F }}|{{ 0o17 }}|{{ 0b101 }}|{{ 1_000 }}|{{ 1e3 }}|{{ 2.5e-3 }}|{{ 'a' 'b' }}",
     "31|15|5|1000|1000.0|0.0025|ab"},
    {"{{ \"\\x41\\u00e9\\n\" }}|{{ '\\q' }}|{{ '\\'' }}|{{ \"\\\"\" }}|{{ '\\\\' }}",
     "A\303\251\n|\\q|'|\"|\\"},
    {"{{ (1, 2)[0] }}|{{ [[1, 2], [3]][0][1] }}|{{ {'a': {'b': 'c'}}.a.b }}|{{ {'a': {'b': "
     "'c'}}['a']['b'] }}",
     "1|2|c|c"},
};

static const struct render_case k_printing[] = {
    {"{{ none }}|{{ true }}|{{ false }}|{{ 1.0 }}|{{ 1e-05 }}|{{ 0.0001 }}|{{ 1e16 }}|{{ 1e15 "
     "}}|{{ -0.0 }}|{{ 0.1 + 0.2 }}|{{ 10 / 3 }}|{{ 1e22 }}|{{ 5e-324 }}",
     "None|True|False|1.0|1e-05|0.0001|1e+16|1000000000000000.0|-0.0|0.30000000000000004|3."
     "3333333333333335|1e+22|5e-324"},
    {"{{ [none, true, 1.5, 'x'] }}|{{ (1,) }}|{{ () }}|{{ (1, 'a') }}|{{ {} }}|{{ {'a': [1, {'b': "
     "none}]} }}",
     "[None, True, 1.5, 'x']|(1,)|()|(1, 'a')|{}|{'a': [1, {'b': None}]}"},
    {"{{ [\"it's\", 'say \"hi\"', \"both ' \\\"\"] }}|{{ ['\\n\\t\\\\', '\303\251', '\\u00a0', "
     "'\\x7f', '\\u2028', '\\x00'] }}",
     "[\"it's\", 'say \"hi\"', 'both \\' \"']|['\\n\\t\\\\', '\303\251', '\\xa0', '\\x7f', "
     "'\\u2028', '\\x00']"},
    {"{{ ['<a>'|safe] }}|{{ x }}|{{ [x] }}|{{ messages[0] }}",
     "[Markup('<a>')]||[Undefined]|{'role': 'system', 'content': 'hi'}"},
    {"{{ 9223372036854775807 }}|{{ -9223372036854775807 - 1 }}|{{ 123456789.123 }}|{{ "
     "1.2345678901234567e17 }}",
     "9223372036854775807|-9223372036854775808|123456789.123|1.2345678901234566e+17"},
};

static const struct render_case k_access[] = {
    {"{{ 'abc'[0] }}|{{ 'abc'[-1] }}|{{ 'abc'[1:] }}|{{ 'abc'[::-1] }}|{{ 'abcdef'[1:5:2] }}|{{ "
     "'abc'[5] }}|{{ [1, 2, 3][::-1] }}|{{ [1, 2, 3][-2:] }}|{{ [1, 2, 3][10:] }}|{{ [1, 2, "
     "3][2:0:-1] }}",
     "a|c|bc|cba|bd||[3, 2, 1]|[2, 3]|[]|[3, 2]"},
    {"{{ 'h\303\251llo'[1:4] }}|{{ 'h\303\251llo'[::-1] }}|{{ "
     "'\346\227\245\346\234\254\350\252\236'[1] }}|{{ 'a\360\237\216\211b'[::-1] }}|{{ (1, 2, "
     "3)[1:] }}",
     "\303\251ll|oll\303\251h|\346\234\254|b\360\237\216\211a|(2, 3)"},
    {"{{ d.a }}|{{ d['a'] }}|{{ d['items'] }}|{{ d.zz }}|{{ d['zz'] }}|{{ d.get('a') }}|{{ "
     "d.get('zz', 5) }}|{{ d.get('zz') }}|{{ d.items is defined }}",
     "1|1|I|||1|5|None|True"},
    {"{{ messages[0].role }}|{{ messages[-1]['content'] }}|{{ messages.0.role }}|{{ messages[9] is "
     "defined }}|{{ messages[0].nothing is defined }}",
     "system|hi|system|False|False"},
    {"{{ n.y is defined }}|{{ n['y'] is defined }}|{{ x is defined }}|{{ x is undefined }}",
     "False|False|False|True"},
    {"{% for i in x %}{{ i }}{% endfor %}{{ x|length }}|{{ x|list }}|{{ x ~ 'a' }}|{{ x|trim }}|{{ "
     "x == x }}|{{ x is none }}|{{ x is iterable }}|{{ x is sequence }}",
     "0|[]|a||True|False|True|True"},
};

static const struct render_case k_string_methods[] = {
    {"{{ '  x  '.strip() }}|{{ 'xxaxx'.strip('x') }}|{{ '  x  '.lstrip() }}|{{ '  x  '.rstrip() "
     "}}|{{ '\\n\\nx\\n'.lstrip('\\n') }}|{{ 'abcba'.rstrip('ab') }}|{{ ' \\u3000x\\u00a0 "
     "'.strip() }}",
     "x|a|x  |  x|x\n|abc|x"},
    {"{{ 'a,b,,c'.split(',') }}|{{ 'a,b,c'.split(',', 1) }}|{{ ' a  b  '.split() }}|{{ 'a b c "
     "'.split(None, 1) }}|{{ 'a,b,c'.rsplit(',', 1) }}|{{ '  a b c'.rsplit(None, 1) }}|{{ "
     "''.split() }}|{{ ''.split(',') }}",
     "['a', 'b', '', 'c']|['a', 'b,c']|['a', 'b']|['a', 'b c ']|['a,b', 'c']|['  a b', "
     "'c']|[]|['']"},
    {"{{ 'a\\nb\\r\\nc\\n'.splitlines() }}|{{ 'a\\nb'.splitlines(true) }}",
     "['a', 'b', 'c']|['a\\n', 'b']"},
    {"{{ 'hello'.startswith('he') }}|{{ 'hello'.endswith('lo') }}|{{ 'hello'.startswith(('x', "
     "'h')) }}|{{ 'hello'.startswith('l', 2) }}",
     "True|True|True|True"},
    {"{{ 'hello'.replace('l', 'L') }}|{{ 'hello'.replace('l', 'L', 1) }}|{{ 'abc'.replace('', '-') "
     "}}",
     "heLLo|heLlo|-a-b-c-"},
    {"{{ 'hello world'.title() }}|{{ \"they're\".title() }}|{{ 'hELLO'.capitalize() }}|{{ "
     "'h\303\251llo w\303\266rld'.upper() }}|{{ '\303\211COLE Stra\303\237e'.lower() }}|{{ "
     "'stra\303\237e'.upper() }}|{{ '\316\243\316\221\316\243 "
     "\316\237\316\224\316\237\316\243'.lower() }}|{{ 'Hello'.swapcase() }}",
     "Hello World|They'Re|Hello|H\303\211LLO W\303\226RLD|\303\251cole "
     "stra\303\237e|STRASSE|\317\203\316\261\317\202 \316\277\316\264\316\277\317\202|hELLO"},
    {"{{ 'hello'.find('l') }}|{{ 'hello'.rfind('l') }}|{{ 'hello'.find('z') }}|{{ "
     "'hello'.count('l') }}|{{ 'h\303\251llo'.find('l') }}|{{ 'ab'.count('') }}",
     "2|3|-1|2|2|3"},
    {"{{ '-'.join(['a', 'b']) }}|{{ '{} and {}'.format(1, 'b') }}|{{ '{a}-{b}'.format(a=1, b=2) "
     "}}|{{ '{:>5}|{:<5}|{:^5}'.format('a', 'b', 'c') }}|{{ '{:.2f}'.format(3.14159) }}|{{ "
     "'{:05d}'.format(42) }}|{{ '{:,}'.format(1234567) }}|{{ '{0[0]}'.format([7]) }}",
     "a-b|1 and b|1-2|    a|b    |  c  |3.14|00042|1,234,567|7"},
    {"{{ 'x'.center(4) }}|{{ 'ab'.ljust(5, '*') }}|{{ 'ab'.rjust(5) }}|{{ '-42'.zfill(5) }}|{{ "
     "'abc1'.isalnum() }}|{{ '123'.isdigit() }}|{{ ' \\t'.isspace() }}|{{ 'Ab'.islower() }}",
     " x  |ab***|   ab|-0042|True|True|True|False"},
    {"{{ 'a=b=c'.partition('=') }}|{{ 'a=b=c'.rpartition('=') }}|{{ 'pre_x'.removeprefix('pre_') "
     "}}|{{ 'x.py'.removesuffix('.py') }}",
     "('a', '=', 'b=c')|('a=b', '=', 'c')|x|x"},
    {"{{ '%s-%d' % ('a', 3) }}|{{ '%5s|%-5s|' % ('ab', 'cd') }}|{{ '%.2f' % 3.14159 }}|{{ '%05d' % "
     "42 }}|{{ '%x %r' % (255, 'q') }}|{{ '%(a)s' % {'a': 1} }}|{{ '100%%' % () }}",
     "a-3|   ab|cd   ||3.14|00042|ff 'q'|1|100%"},
};

static const struct render_case k_filters[] = {
    {"{{ [3, 1, 2]|sort }}|{{ [3, 1, 2]|sort(reverse=true) }}|{{ ['b', 'A', 'a']|sort }}|{{ ['b', "
     "'A', 'a']|sort(case_sensitive=true) }}|{{ [{'n': 2}, {'n': 1}]|sort(attribute='n') }}",
     "[1, 2, 3]|[3, 2, 1]|['A', 'a', 'b']|['A', 'a', 'b']|[{'n': 1}, {'n': 2}]"},
    {"{{ [3, 1, 2]|min }}|{{ [3, 1, 2]|max }}|{{ []|max }}|{{ [1, 2, 3]|sum }}|{{ [{'p': 1}, {'p': "
     "2}]|sum(attribute='p') }}|{{ [1, 2, 1]|unique|list }}|{{ ['a', 'A']|unique|list }}",
     "1|3||6|3|[1, 2]|['a']"},
    {"{{ {'b': 1, 'a': 2}|dictsort }}|{{ {'b': 1, 'a': 2}|dictsort(by='value') }}|{{ {'a': 1, 'b': "
     "2}|items|list }}|{{ x|items|list }}",
     "[('a', 2), ('b', 1)]|[('b', 1), ('a', 2)]|[('a', 1), ('b', 2)]|[]"},
    {"{{ [1, 2, 3]|first }}|{{ [1, 2, 3]|last }}|{{ 'abc'|first }}|{{ []|first }}|{{ [1, 2, "
     "3]|reverse|list }}|{{ 'abc'|reverse }}|{{ 'ab'|list }}|{{ 'h\303\251llo'|length }}|{{ {'a': "
     "1}|count }}",
     "1|3|a||[3, 2, 1]|cba|['a', 'b']|5|1"},
    {"{{ 'hello-world (x'|title }}|{{ 'hELLo'|capitalize }}|{{ 'abc'|upper }}|{{ 'ABC'|lower }}|{{ "
     "'a'|center(5) }}|{{ '  hi  '|trim }}|{{ 'xhix'|trim('x') }}|{{ ' \\u3000x\\u00a0 '|trim }}",
     "Hello-World (X|Hello|ABC|abc|  a  |hi|hi|x"},
    {"{{ 3.7|int }}|{{ '3.7'|int }}|{{ 'abc'|int }}|{{ 'abc'|int(7) }}|{{ '0x1A'|int(0, 16) }}|{{ "
     "' 42 '|int }}|{{ '3.5'|float }}|{{ 'x'|float }}|{{ 3|float }}",
     "3|3|0|7|26|42|3.5|0.0|3.0"},
    {"{{ 2.5|round }}|{{ 3.5|round }}|{{ 2.675|round(2) }}|{{ 7|round }}|{{ 2.4|round(0, 'ceil') "
     "}}|{{ 2.6|round(method='floor') }}",
     "2.0|4.0|2.67|7|3.0|2.0"},
    {"{{ [1, 2, 3]|join }}|{{ [1, 2, 3]|join(', ') }}|{{ [{'a': 'x'}, {'a': 'y'}]|join('-', "
     "attribute='a') }}",
     "123|1, 2, 3|x-y"},
    {"{{ messages|map(attribute='role')|join(',') }}|{{ ['a', 'b']|map('upper')|list }}|{{ "
     "messages|selectattr('role', 'equalto', 'user')|list|length }}|{{ [1, 2, 3, "
     "4]|select('odd')|list }}|{{ [1, 2, 3, 4]|reject('even')|list }}|{{ "
     "messages|rejectattr('role', 'in', ['user'])|map(attribute='role')|list }}",
     "system,user,assistant,user|['A', 'B']|2|[1, 3]|[1, 3]|['system', 'assistant']"},
    {"{{ [1, 2, 3, 4, 5]|batch(2)|list }}|{{ [1, 2, 3]|batch(2, 'x')|list }}|{{ [1, 2, 3, 4, "
     "5]|slice(2)|list }}|{{ [{'c': 'b'}, {'c': 'a'}, {'c': 'b'}]|groupby('c')|map('first')|list "
     "}}",
     "[[1, 2], [3, 4], [5]]|[[1, 2], [3, 'x']]|[[1, 2, 3], [4, 5]]|['a', 'b']"},
    {"{{ 'a<b>&\"\\''|e }}|{{ '<a>'|safe }}|{{ '<a>'|forceescape }}|{{ ('<a>'|safe) + '<b>' }}|{{ "
     "('<a>'|safe) ~ '<b>' }}",
     "a&lt;b&gt;&amp;&#34;&#39;|<a>|&lt;a&gt;|<a>&lt;b&gt;|<a><b>"},
    {"{{ 'a\\nb\\n\\nc'|indent }}|{{ 'a\\nb'|indent(2, true) }}|{{ 'a\\n\\nb'|indent(2, "
     "blank=true) }}|{{ 'foo bar baz qux'|truncate(9) }}|{{ 'foo bar baz'|wordcount }}",
     "a\n    b\n\n    c|  a\n  b|a\n  \n  b|foo...|3"},
    {"{{ x|default('dflt') }}|{{ n|default('nd') }}|{{ n|default('nd', true) }}|{{ ''|d('e', true) "
     "}}|{{ 5|string ~ 'x' }}|{{ [1]|string }}|{{ '%s %s'|format(1, 2) }}|{{ 'aaa'|replace('a', "
     "'b', 2) }}",
     "dflt|None|nd|e|5x|[1]|1 2|bba"},
};

static const struct render_case k_tojson[] = {
    {"{{ {'a': [1, 2.5, none, true], '\303\251': 'q\"\\n\\t\\x01\\x7f'}|tojson }}|{{ "
     "'<>&\\''|tojson }}",
     "{\"a\": [1, 2.5, null, true], \"\303\251\": \"q\\\"\\n\\t\\u0001\177\"}|\"<>&'\""},
    {"{{ [1, 2]|tojson(indent=2) }}|{{ {'a': {'b': []}, 'c': {}}|tojson(indent=1) }}|{{ {'a': "
     "1}|tojson(indent=0) }}|{{ [1]|tojson(indent='\\t') }}",
     "[\n  1,\n  2\n]|{\n \"a\": {\n  \"b\": []\n },\n \"c\": {}\n}|{\n\"a\": 1\n}|[\n\t1\n]"},
    {"{{ {'b': 1, 'a': 2}|tojson(sort_keys=true) }}|{{ [1, {'a': 2}]|tojson(separators=(',', ':')) "
     "}}|{{ '\303\251\360\237\230\200'|tojson(ensure_ascii=true) }}",
     "{\"a\": 2, \"b\": 1}|[1,{\"a\":2}]|\"\\u00e9\\ud83d\\ude00\""},
    {"{{ (1, 2)|tojson }}|{{ [1e-7, 1e16, 100.0, -0.0, 0.1, 1e21]|tojson }}|{{ messages[0]|tojson "
     "}}",
     "[1, 2]|[1e-07, 1e+16, 100.0, -0.0, 0.1, 1e+21]|{\"role\": \"system\", \"content\": \"hi\"}"},
};

static const struct render_case k_tests[] = {
    {"{{ 1 is number }}|{{ 1.5 is float }}|{{ 1 is integer }}|{{ true is integer }}|{{ true is "
     "boolean }}|{{ true is true }}|{{ 1 is true }}|{{ false is false }}|{{ none is none }}|{{ 'a' "
     "is string }}",
     "True|True|True|False|True|True|False|True|True|True"},
    {"{{ {} is mapping }}|{{ [] is mapping }}|{{ [] is sequence }}|{{ 'a' is sequence }}|{{ {} is "
     "sequence }}|{{ 1 is sequence }}|{{ 'a' is iterable }}|{{ 1 is iterable }}|{{ none is "
     "iterable }}",
     "True|False|True|True|True|False|True|False|False"},
    {"{{ 4 is even }}|{{ 3 is odd }}|{{ 9 is divisibleby 3 }}|{{ 'a' is lower }}|{{ 'Ab' is upper "
     "}}|{{ 1 is in [1] }}|{{ 1 is eq 1 }}|{{ 2 is gt 1 }}|{{ 1 is le 0 }}",
     "True|True|True|True|False|True|True|True|False"},
    {"{{ 'upper' is filter }}|{{ 'odd' is test }}|{{ range is callable }}|{{ 1 is callable }}|{{ 2 "
     "is sameas 2 }}|{{ 1 is not none }}|{{ x is not defined }}|{{ not x is defined }}",
     "True|True|True|False|True|True|True|True"},
};

static const struct render_case k_loops[] = {
    {"{% for m in messages %}{{ loop.index }}{{ loop.index0 }}{{ loop.revindex }}{{ loop.revindex0 "
     "}}{{ loop.first }}{{ loop.last }}{{ loop.length }}{{ loop.depth }}|{% endfor %}",
     "1043TrueFalse41|2132FalseFalse41|3221FalseFalse41|4310FalseTrue41|"},
    {"{% for m in messages %}{{ loop.previtem.role if loop.previtem }}-{{ loop.nextitem.role if "
     "loop.nextitem is defined }};{% endfor %}",
     "-user;system-assistant;user-user;assistant-;"},
    {"{% for m in messages %}{{ loop.cycle('a', 'b', 'c') }}{% endfor %}|{% for i in [1, 1, 2, 2, "
     "3] %}{% if loop.changed(i) %}{{ i }}{% endif %}{% endfor %}",
     "abca|123"},
    {"{% for i in range(10) %}{% if i == 5 %}{% break %}{% endif %}{% if i is odd %}{% continue "
     "%}{% endif %}{{ i }}{% endfor %}",
     "024"},
    {"{% for i in [] %}x{% else %}empty{% endfor %}|{% for i in [1, 2] if i > 5 %}x{% else "
     "%}filtered{% endfor %}|{% for i in range(6) if i is even %}{{ i }}/{{ loop.index }}/{{ "
     "loop.length }},{% endfor %}",
     "empty|filtered|0/1/3,2/2/3,4/3/3,"},
    {"{% for k, v in {'a': 1, 'b': 2}.items() %}{{ k }}={{ v }};{% endfor %}|{% for k in {'a': 1, "
     "'b': 2} %}{{ k }}{% endfor %}|{% for a, b in [[1, 2], [3, 4]] %}{{ a + b }}{% endfor %}|{% "
     "for c in 'h\303\251y' %}[{{ c }}]{% endfor %}",
     "a=1;b=2;|ab|37|[h][\303\251][y]"},
    {"{% for message in messages[::-1] %}{{ loop.index0 }}{{ message.role[0] }}{% endfor %}",
     "0u1a2u3s"},
    {"{% for item in [{'n': 'a', 'c': [{'n': 'b', 'c': []}, {'n': 'c', 'c': [{'n': 'd', 'c': "
     "[]}]}]}] recursive %}({{ item.n }}{{ loop.depth }}{{ loop(item.c) }}){% endfor %}",
     "(a1(b2)(c2(d3)))"},
    {"{% set outer = [1, 2] %}{% for a in outer %}{% set l1 = loop %}{% for b in outer %}{{ "
     "l1.index }}{{ loop.index }} {% endfor %}{% endfor %}",
     "11 12 21 22 "},
    {"{{ range(5)|list }}|{{ range(2, 5)|list }}|{{ range(0, 10, 3)|list }}|{{ range(5, 0, "
     "-2)|list }}",
     "[0, 1, 2, 3, 4]|[2, 3, 4]|[0, 3, 6, 9]|[5, 3, 1]"},
};

static const struct render_case k_scoping[] = {
    {"{% set x = 1 %}{% for i in [1, 2] %}{{ x }}{% set x = i * 10 %}{{ x }}{% endfor %}{{ x }}",
     "1101201"},
    {"{% for i in [1, 2] %}[{{ y }}]{% set y = i %}{% endfor %}[{{ y }}]", "[][][]"},
    {"{% set x = 1 %}{% if true %}{% set x = 2 %}{% endif %}{{ x }}", "2"},
    {"{% set ns = namespace(a=1, b='x') %}{% for i in [1, 2, 3] %}{% set ns.a = ns.a + i %}{% "
     "endfor %}{{ ns.a }}{{ ns.b }}{{ ns.zz }}|{{ ns }}",
     "7x|<Namespace {'a': 7, 'b': 'x'}>"},
    {"{% set ns = namespace(items=[]) %}{% for i in range(3) %}{% set ns.items = ns.items + [i] "
     "%}{% endfor %}{{ ns.items }}",
     "[0, 1, 2]"},
    {"{% set a, b = 1, 2 %}{{ a }}{{ b }}|{% set t = 1, 2 %}{{ t }}|{% set x %}captured {{ 1 + 1 "
     "}}{% endset %}[{{ x }}]|{% set y | upper %}up{% endset %}{{ y }}",
     "12|(1, 2)|[captured 2]|UP"},
    {"{% with a = 1, b = 2 %}{{ a + b }}{% endwith %}[{{ a }}]", "3[]"},
    {"{% block b %}in block {{ messages|length }}{% endblock %}", "in block 4"},
};

static const struct render_case k_macros[] = {
    {"{% macro m(a, b='B', c=none) %}[{{ a }}|{{ b }}|{{ c }}]{% endmacro %}{{ m(1) }}{{ m(1, 2) "
     "}}{{ m(1, c=3) }}{{ m(b=5, a=4) }}{{ m() }}",
     "[1|B|None][1|2|None][1|B|3][4|5|None][|B|None]"},
    {"{% macro m() %}{{ varargs }}|{{ kwargs }}{% endmacro %}{{ m(1, 2, k=3) }}|{% macro n(a, b=a "
     "~ '!') %}{{ b }}{% endmacro %}{{ n('hi') }}",
     "(1, 2)|{'k': 3}|hi!"},
    {"{% macro outer() %}<{{ caller() }}>{% endmacro %}{% call outer() %}inside{% endcall %}|{% "
     "macro each(items) %}{% for i in items %}{{ caller(i) }}{% endfor %}{% endmacro %}{% call(x) "
     "each([1, 2]) %}({{ x }}){% endcall %}",
     "<inside>|(1)(2)"},
    {"{% macro m() %}{{ glob }}{% endmacro %}{% set glob = 'G' %}{{ m() }}{% for glob in [1] %}{{ "
     "m() }}{% endfor %}",
     "GG"},
    {"{% macro f(n) %}{% if n > 0 %}{{ n }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(5) }}|{% "
     "macro m() %}x{% endmacro %}{{ m() ~ m() }}|{{ m()|length }}|{{ m.name }}",
     "54321|xx|1|m"},
    {"{% filter upper %}hello {{ 'world' }}{% endfilter %}|{% filter replace('a', 'o')|upper "
     "%}banana{% endfilter %}",
     "HELLO WORLD|BONONO"},
};

static const struct render_case k_whitespace[] = {
    {"{% if true %}\n  a\n{% endif %}\nb", "  a\nb"},
    {"  {% if true %}\n  x\n  {% endif %}\n", "  x\n"},
    {"  {%+ if true %}\nx\n{% endif +%}\ny", "  x\n\ny"},
    {"   {{ 'v' }}\n  {% for i in [1, 2] %}\n    {{ i }}\n  {% endfor %}\nend",
     "   v\n    1\n    2\nend"},
    {"text   {% if true %}same line{% endif %}", "text   same line"},
    {"  {#- c -#}\n  a  \n  {# c #}\nb", "a  \nb"},
    {"{% for m in messages %}\n    {%- if m.role == 'user' %}\n        {{- 'U:' + m.content }}\n   "
     " {%- endif %}\n{% endfor %}",
     "U:hiU:hi"},
    {"a\n{%- if true -%}\n\n   b\n\n{%- endif -%}\nc", "abc"},
    {"{% raw %}\n  {{ x }}\n{% endraw %}\nafter", "\n  {{ x }}\nafter"},
    {"{% macro m() -%}\n   body\n{%- endmacro %}\n[{{ m() }}]", "[body]"},
    {"x {%- for i in range(3) %} {{ i }} {% endfor -%} y", "x 0  1  2 y"},
    {"a \343\200\200 {%- if true %}x{% endif %}|{{ 'x' -}}\342\200\250 y", "ax|xy"},
    {"line\r\nnext {{ 1 }}\r\n{% if true %}\r\nin\r\n{% endif %}\r\n", "line\nnext 1\nin\n"},
    {"x\n\n", "x\n"},
    {"a {# multi\nline #} b {#- trim -#}  c", "a  bc"},
};

TEST(chat_template_expressions) {
    CHECK_CASES(k_expressions);
}

TEST(chat_template_printing) {
    CHECK_CASES(k_printing);
}

TEST(chat_template_access) {
    CHECK_CASES(k_access);
}

TEST(chat_template_string_methods) {
    CHECK_CASES(k_string_methods);
}

TEST(chat_template_filters) {
    CHECK_CASES(k_filters);
}

TEST(chat_template_tojson) {
    CHECK_CASES(k_tojson);
}

TEST(chat_template_tests) {
    CHECK_CASES(k_tests);
}

TEST(chat_template_loops) {
    CHECK_CASES(k_loops);
}

TEST(chat_template_scoping) {
    CHECK_CASES(k_scoping);
}

TEST(chat_template_macros) {
    CHECK_CASES(k_macros);
}

TEST(chat_template_whitespace) {
    CHECK_CASES(k_whitespace);
}

/* ---- golden renders against Python Jinja2 -------------------------------------------------- */

#ifndef NO_JANSSON
static struct tpl_value *from_json(struct tpl_arena *a, json_t *j) {
    switch (json_typeof(j)) {
    case JSON_OBJECT: {
        struct tpl_value *o = tpl_value_object(a);
        const char *k;
        json_t *v;
        json_object_foreach(j, k, v) tpl_object_set(a, o, k, strlen(k), from_json(a, v));
        return o;
    }
    case JSON_ARRAY: {
        struct tpl_value *arr = tpl_value_array(a);
        size_t i;
        json_t *v;
        json_array_foreach(j, i, v) tpl_array_push(a, arr, from_json(a, v));
        return arr;
    }
    case JSON_STRING:
        return tpl_value_string(a, json_string_value(j), json_string_length(j));
    case JSON_INTEGER:
        return tpl_value_int(a, (int64_t)json_integer_value(j));
    case JSON_REAL:
        return tpl_value_float(a, json_real_value(j));
    case JSON_TRUE:
        return tpl_value_bool(1);
    case JSON_FALSE:
        return tpl_value_bool(0);
    default:
        return tpl_value_none();
    }
}

/* defaults overlaid by the case's context, minus the case's "unset" keys (see cases.json). */
static struct tpl_value *case_context(struct tpl_arena *a, json_t *defaults, json_t *c) {
    json_t *ctx = json_deep_copy(defaults);
    json_object_update(ctx, json_object_get(c, "context"));
    size_t i;
    json_t *key;
    json_array_foreach(json_object_get(c, "unset"), i, key)
        json_object_del(ctx, json_string_value(key));
    struct tpl_value *v = from_json(a, ctx);
    json_decref(ctx);
    return v;
}

static char *read_expected(const char *tmpl, const char *cname, const char *ext, size_t *n) {
    char path[512];
    snprintf(path, sizeof(path), DATA_DIR "/expected/%s__%s.%s", tmpl, cname, ext);
    return test_read_file(path, n);
}
#endif

TEST(chat_template_golden) {
#ifdef NO_JANSSON
    SKIP_TEST("built without jansson (libjansson-dev)");
#else
    json_error_t jerr;
    json_t *doc = json_load_file(DATA_DIR "/cases.json", JSON_ALLOW_NUL, &jerr);
    size_t manifest_n;
    char *manifest = test_read_file(DATA_DIR "/expected/MANIFEST", &manifest_n);
    if (!doc || !manifest) {
        json_decref(doc);
        mem_free(manifest);
        SKIP_TEST("%s/cases.json or expected/MANIFEST missing (run from the repo root)", DATA_DIR);
    }
    json_t *defaults = json_object_get(doc, "defaults"), *cases = json_object_get(doc, "cases");
    int n_pass = 0, n_total = 0, n_templates = 0;
    char *save = NULL;
    for (char *tmpl = strtok_r(manifest, "\n", &save); tmpl; tmpl = strtok_r(NULL, "\n", &save)) {
        char rel[300];
        snprintf(rel, sizeof(rel), "templates/%s.jinja", tmpl);
        const char *path = test_model_path(rel);
        size_t src_n;
        char *src = path ? test_read_file(path, &src_n) : NULL;
        if (!src) {
            printf("  note: %s not found under ../shared/models; skipped\n", rel);
            continue;
        }
        n_templates++;
        struct chat_template *t;
        struct error err = {0};
        int rc = chat_template_parse(&t, src, src_n, &err);
        mem_free(src);
        EXPECT_MSG(rc == 0, "%s: parse failed: %s", tmpl, err.msg);
        if (rc) continue;
        size_t ci;
        json_t *c;
        json_array_foreach(cases, ci, c) {
            const char *cname = json_string_value(json_object_get(c, "name"));
            struct tpl_arena *a = tpl_arena_create(0);
            struct tpl_value *ctx = case_context(a, defaults, c);
            struct buf out;
            buf_init(&out);
            memset(&err, 0, sizeof(err));
            rc = chat_template_render(t, ctx, &out, &err);
            size_t want_n;
            char *want = read_expected(tmpl, cname, "txt", &want_n);
            char *want_err = want ? NULL : read_expected(tmpl, cname, "err", &want_n);
            int ok = 0;
            n_total++;
            if (want) {
                ok = rc == 0 && out.len == want_n &&
                     memcmp(out.data ? out.data : "", want, want_n) == 0;
                if (!ok && rc)
                    test_fail(__FILE__, __LINE__, "%s x %s: render failed: %s", tmpl, cname,
                              err.msg);
                else if (!ok) {
                    test_fail(__FILE__, __LINE__, "%s x %s: render differs from Jinja2", tmpl,
                              cname);
                    show_diff("render", out.data ? out.data : "", out.len, want, want_n);
                }
            } else if (want_err) {
                /* Jinja2 raised: raise_exception's message must match exactly, any other error
                 * (TypeError, UndefinedError) only has to be an error too. */
                const char *prefix = "TemplateError: ";
                if (strncmp(want_err, prefix, strlen(prefix)) == 0)
                    ok = rc == ERR_INVALID && strcmp(err.msg, want_err + strlen(prefix)) == 0;
                else
                    ok = rc != 0;
                if (!ok)
                    test_fail(__FILE__, __LINE__, "%s x %s: want error \"%s\", got rc %d \"%s\"",
                              tmpl, cname, want_err, rc, rc ? err.msg : "");
            } else {
                test_fail(__FILE__, __LINE__,
                          "%s x %s: no expected file; run tools/gen_template_renders.py", tmpl,
                          cname);
            }
            n_pass += ok;
            mem_free(want);
            mem_free(want_err);
            buf_free(&out);
            tpl_arena_free(a);
        }
        chat_template_free(t);
    }
    printf("  chat_template_golden: %d/%d template x case renders match Jinja2 (%d templates)\n",
           n_pass, n_total, n_templates);
    json_decref(doc);
    mem_free(manifest);
    if (n_templates == 0) SKIP_TEST("no templates under ../shared/models/templates");
#endif
}

/* ---- errors ------------------------------------------------------------------------------- */

static void expect_error(const char *file, int line, const char *src, int want_code,
                         const char *want_msg_part) {
    int code;
    struct error err = {0};
    char *got = render(src, NULL, &code, &err);
    if (got) {
        test_fail(file, line, "%s: rendered \"%s\", want error %d", src, got, want_code);
        mem_free(got);
        return;
    }
    if (code != want_code || !strstr(err.msg, want_msg_part))
        test_fail(file, line, "%s: got %d \"%s\", want %d containing \"%s\"", src, code, err.msg,
                  want_code, want_msg_part);
}

#define EXPECT_ERROR(src, code, part) expect_error(__FILE__, __LINE__, src, code, part)

TEST(chat_template_errors) {
    /* syntax errors carry line:column */
    EXPECT_ERROR("a\nb {{ 1 + }}", ERR_FORMAT, "line 2:");
    EXPECT_ERROR("{% if x %}\nunclosed", ERR_FORMAT, "Unexpected end of template");
    EXPECT_ERROR("\n\n  {% endfor %}", ERR_FORMAT, "line 3:6: Encountered unknown tag 'endfor'");
    EXPECT_ERROR("{{ 'open }}", ERR_FORMAT, "line 1:4:");
    EXPECT_ERROR("{{ (1, 2 }}", ERR_FORMAT, "unexpected '}'");
    EXPECT_ERROR("{% for a, in [[1]] %}{% endfor %}", ERR_FORMAT, "expected token 'in'");
    EXPECT_ERROR("{% break %}", ERR_FORMAT, "'break' outside loop");
    EXPECT_ERROR("{# never closed", ERR_FORMAT, "Missing end of comment tag");
    EXPECT_ERROR("{% raw %}never closed", ERR_FORMAT, "Missing end of raw directive");
    EXPECT_ERROR("{% set 1 = 2 %}", ERR_FORMAT, "can't assign");
    EXPECT_ERROR("{{ '\\N{BULLET}' }}", ERR_FORMAT, "not supported");
    EXPECT_ERROR("{% include 'x.jinja' %}", ERR_UNSUPPORTED, "not supported");
    EXPECT_ERROR("{% nosuchtag %}", ERR_FORMAT, "unknown tag 'nosuchtag'");
    /* runtime errors carry the line, like Jinja's TypeError/UndefinedError */
    EXPECT_ERROR("x\n{{ 'a' + 1 }}", ERR_INVALID,
                 "line 2: can only concatenate str (not \"int\") to str");
    EXPECT_ERROR("{{ nothing.attr }}", ERR_INVALID, "'nothing' is undefined");
    EXPECT_ERROR("{{ {}.a.b }}", ERR_INVALID, "'dict object' has no attribute 'a'");
    EXPECT_ERROR("{{ [1][5].x }}", ERR_INVALID, "list object has no element 5");
    EXPECT_ERROR("{{ nothing + 1 }}", ERR_INVALID, "'nothing' is undefined");
    EXPECT_ERROR("{{ 1 / 0 }}", ERR_INVALID, "division by zero");
    EXPECT_ERROR("{{ 1 < 'a' }}", ERR_INVALID,
                 "not supported between instances of 'int' and 'str'");
    EXPECT_ERROR("{{ 'a' in none }}", ERR_INVALID, "argument of type 'NoneType' is not iterable");
    EXPECT_ERROR("{% for a in 5 %}{% endfor %}", ERR_INVALID, "'int' object is not iterable");
    EXPECT_ERROR("{{ 1|nosuch }}", ERR_INVALID, "No filter named 'nosuch'.");
    EXPECT_ERROR("{{ 1 is nosuch }}", ERR_INVALID, "No test named 'nosuch'.");
    EXPECT_ERROR("{{ 5|items }}", ERR_INVALID, "Can only get item pairs from a mapping.");
    EXPECT_ERROR("{{ [1].append(2) }}", ERR_INVALID, "unsafe");
    EXPECT_ERROR("{% set a = 1 %}{% set a.b = 2 %}", ERR_INVALID, "non-namespace");
    EXPECT_ERROR("{% macro m(a) %}{% endmacro %}{{ m(1, 2) }}", ERR_INVALID,
                 "takes not more than 1 argument");
    EXPECT_ERROR("{{ undefined_thing|tojson }}", ERR_INVALID, "not JSON serializable");
    EXPECT_ERROR("{{ 9223372036854775807 + 1 }}", ERR_UNSUPPORTED, "64-bit");
    /* raise_exception: the message exactly, no prefix */
    EXPECT_ERROR(
        "{% if true %}\n{{ raise_exception('No user query found in messages.') }}{% endif %}",
        ERR_INVALID, "No user query found in messages.");
    int code;
    struct error err = {0};
    char *got = render("{{ raise_exception('bad ' ~ 42) }}", NULL, &code, &err);
    EXPECT(got == NULL && code == ERR_INVALID && strcmp(err.msg, "bad 42") == 0);
    got = render("{{ raise_exception('a\\x00b') }}", NULL, &code, &err);
    EXPECT(got == NULL && code == ERR_INVALID && strcmp(err.msg, "a\\x00b") == 0);
    /* a failed render leaves the output buffer as it was */
    struct chat_template *t;
    ASSERT(chat_template_parse(&t, "abc{{ 1 / 0 }}", 14, &err) == 0);
    struct buf out;
    buf_init(&out);
    buf_append_str(&out, "kept");
    EXPECT(chat_template_render(t, NULL, &out, &err) == ERR_INVALID);
    EXPECT(out.len == 4 && memcmp(out.data, "kept", 4) == 0);
    EXPECT(chat_template_render(t, tpl_value_none(), &out, &err) == ERR_INVALID);
    buf_free(&out);
    chat_template_free(t);
}

/* ---- limits --------------------------------------------------------------------------------- */

TEST(chat_template_limits) {
    struct chat_template_opts opts = {.max_steps = 100000};
    int code;
    struct error err = {0};
    char *got;
    /* a loop that would run 10^10 times stops at the step limit */
    got = render_opts(
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", NULL,
        &opts, &code, &err);
    EXPECT(!got && code == ERR_RANGE && strstr(err.msg, "steps"));
    /* work on big values counts: a scan of a 100 KB string 100000 times is 39M steps */
    got = render_opts("{% set s = 'x' * 100000 %}{% set t = 'x' * 100000 %}"
                      "{% for i in range(100000) %}{% if 'y' in s or [s] == [t] %}{% endif %}"
                      "{% endfor %}",
                      NULL, &opts, &code, &err);
    EXPECT(!got && code == ERR_RANGE && strstr(err.msg, "steps"));
    /* output size */
    opts = (struct chat_template_opts){.max_output_bytes = 1000};
    got = render_opts("{% for i in range(1000) %}0123456789{% endfor %}", NULL, &opts, &code, &err);
    EXPECT(!got && code == ERR_RANGE && strstr(err.msg, "output"));
    /* doubling a string in a loop hits the size limits, not the machine's memory */
    got = render_opts("{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s ~ "
                      "ns.s %}{% endfor %}",
                      NULL, &opts, &code, &err);
    EXPECT(!got && code == ERR_RANGE);
    opts = (struct chat_template_opts){.max_memory_bytes = 1 << 20};
    got = render_opts("{% set ns = namespace(l=[]) %}{% for i in range(100000) %}{% set ns.l = "
                      "ns.l + [i] %}{% endfor %}",
                      NULL, &opts, &code, &err);
    EXPECT(!got && code == ERR_RANGE && strstr(err.msg, "memory"));
    /* unbounded recursion */
    got = render("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", NULL, &code, &err);
    EXPECT(!got && code == ERR_RANGE && strstr(err.msg, "nested"));
    got = render("{% for x in [[1]] recursive %}{{ loop([[1]]) }}{% endfor %}", NULL, &code, &err);
    EXPECT(!got && code == ERR_RANGE);
    /* the sandbox's range limit */
    got = render("{{ range(100001)|length }}", NULL, &code, &err);
    EXPECT(!got && code == ERR_RANGE && strstr(err.msg, "MAX_RANGE"));
    /* deep nesting in the source is a syntax error, not a stack overflow */
    struct buf src;
    buf_init(&src);
    buf_append_str(&src, "{{ ");
    for (int i = 0; i < 5000; i++) buf_append_str(&src, "(");
    buf_append_str(&src, "1 }}");
    got = render(src.data, NULL, &code, &err);
    EXPECT(!got && code == ERR_FORMAT);
    buf_clear(&src);
    buf_append_str(&src, "{{ ");
    for (int i = 0; i < 5000; i++) buf_append_str(&src, "not ");
    buf_append_str(&src, "1 }}");
    got = render(src.data, NULL, &code, &err);
    EXPECT(!got && code == ERR_FORMAT);
    buf_clear(&src); /* a long left-leaning chain parses, and its evaluation depth is bounded */
    buf_append_str(&src, "{{ 0");
    for (int i = 0; i < 20000; i++) buf_append_str(&src, " + 1");
    buf_append_str(&src, " }}");
    got = render(src.data, NULL, &code, &err);
    EXPECT(!got && code == ERR_RANGE && strstr(err.msg, "nested too deeply"));
    buf_clear(&src);
    for (int i = 0; i < 2000; i++) buf_append_str(&src, "{% if true %}");
    got = render(src.data, NULL, &code, &err);
    EXPECT(!got && code == ERR_FORMAT);
    buf_free(&src);
    /* a deeply nested value cannot overflow the stack when printed or serialized */
    struct tpl_arena *a = tpl_arena_create(0);
    struct tpl_value *ctx = tpl_value_object(a), *v = tpl_value_array(a);
    tpl_object_set(a, ctx, "deep", 4, v);
    for (int i = 0; i < 10000; i++) {
        struct tpl_value *inner = tpl_value_array(a);
        tpl_array_push(a, v, inner);
        v = inner;
    }
    got = render("{{ deep }}", ctx, &code, &err);
    EXPECT(!got && code == ERR_RANGE);
    got = render("{{ deep|tojson }}", ctx, &code, &err);
    EXPECT(!got && code == ERR_RANGE);
    got = render("{{ deep == deep }}|{{ deep|length }}", ctx, &code, &err);
    EXPECT(got && strcmp(got, "True|1") == 0);
    mem_free(got);
    tpl_arena_free(a);
}

/* ---- the value API ----------------------------------------------------------------------------
 */

TEST(chat_template_values) {
    struct tpl_arena *a = tpl_arena_create(0);
    struct tpl_value *o = tpl_value_object(a), *arr = tpl_value_array(a);
    EXPECT(tpl_object_set(a, o, "z", 1, tpl_value_int(a, 1)) == 0);
    EXPECT(tpl_object_set(a, o, "a", 1, tpl_value_string(a, "x\n\"\xc3\xa9", 5)) == 0);
    EXPECT(tpl_object_set(a, o, "z", 1, tpl_value_float(a, 0.5)) == 0); /* keeps its place */
    for (int i = 0; i < 20; i++) tpl_array_push(a, arr, tpl_value_int(a, i));
    tpl_array_push(a, arr, tpl_value_bool(1));
    tpl_array_push(a, arr, tpl_value_none());
    EXPECT(tpl_object_set(a, o, "list", 4, arr) == 0);
    for (int i = 0; i < 40; i++) { /* past the linear-scan size: hashed lookups */
        char key[16];
        snprintf(key, sizeof(key), "k%d", i);
        tpl_object_set(a, o, key, strlen(key), tpl_value_int(a, i * 10));
    }
    const struct tpl_value *k33 = tpl_object_get(o, "k33", 3);
    EXPECT(k33 != NULL && tpl_object_get(o, "k40", 3) == NULL &&
           tpl_object_get(arr, "a", 1) == NULL);
    EXPECT(tpl_array_push(a, o, tpl_value_none()) == ERR_INVALID);
    struct buf b;
    buf_init(&b);
    struct error err = {0};
    EXPECT(tpl_value_to_json(arr, &b, &err) == 0);
    EXPECT(
        strcmp(
            b.data,
            "[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, true, null]") ==
        0);
    buf_clear(&b);
    struct tpl_value *small = tpl_value_object(a);
    tpl_object_set(a, small, "z", 1, tpl_value_float(a, 0.5));
    tpl_object_set(a, small, "a", 1, tpl_value_string(a, "x\n\"\xc3\xa9", 5));
    EXPECT(tpl_value_to_json(small, &b, &err) == 0);
    EXPECT(strcmp(b.data, "{\"z\": 0.5, \"a\": \"x\\n\\\"\xc3\xa9\"}") == 0);
    buf_free(&b);
    int code;
    char *got;
    struct tpl_value *ctx = tpl_value_object(a);
    tpl_object_set(a, ctx, "o", 1, o);
    got = render("{{ o.z }}|{{ o.a|length }}|{{ o['k33'] }}|{{ o|length }}|{{ (o|list)[:3] }}", ctx,
                 &code, &err);
    EXPECT(got && strcmp(got, "0.5|4|330|43|['z', 'a', 'list']") == 0);
    mem_free(got);
    EXPECT(!tpl_arena_failed(a));
    tpl_arena_free(a);
    /* a NULL value (a failed constructor) fails the push and marks the arena */
    a = tpl_arena_create(0);
    EXPECT(tpl_array_push(a, tpl_value_array(a), NULL) == ERR_NOMEM && tpl_arena_failed(a));
    tpl_arena_free(a);
    /* a bounded arena fails cleanly */
    a = tpl_arena_create(100000);
    struct tpl_value *big = tpl_value_array(a);
    int failures = 0;
    for (int i = 0; i < 100000 && !failures; i++)
        failures += tpl_array_push(a, big, tpl_value_int(a, i)) != 0;
    EXPECT(failures == 1 && tpl_arena_failed(a) && tpl_value_int(a, 1) == NULL);
    tpl_arena_free(a);
}

/* ---- realistic contexts: threads, speed, allocation failures ----------------------------------
 */

static struct tpl_value *str_v(struct tpl_arena *a, const char *s) {
    return tpl_value_string(a, s, strlen(s));
}

/* A conversation of n_messages (system, then user/assistant-with-tool-call/tool/assistant
 * rounds) with two tools, as the server will build it from a request. */
static struct tpl_value *chat_context(struct tpl_arena *a, int n_messages) {
    struct tpl_value *ctx = tpl_value_object(a), *msgs = tpl_value_array(a),
                     *tools = tpl_value_array(a);
    for (int t = 0; t < 2; t++) {
        struct tpl_value *tool = tpl_value_object(a), *fn = tpl_value_object(a);
        struct tpl_value *params = tpl_value_object(a), *props = tpl_value_object(a);
        struct tpl_value *loc = tpl_value_object(a), *unit = tpl_value_object(a),
                         *en = tpl_value_array(a);
        tpl_object_set(a, loc, "type", 4, str_v(a, "string"));
        tpl_object_set(a, loc, "description", 11,
                       str_v(a, "City, e.g. \"Paris\" \xe2\x80\x94 \xe5\xa4\xa9\xe6\xb0\x94"));
        tpl_array_push(a, en, str_v(a, "celsius"));
        tpl_array_push(a, en, str_v(a, "fahrenheit"));
        tpl_object_set(a, unit, "type", 4, str_v(a, "string"));
        tpl_object_set(a, unit, "enum", 4, en);
        tpl_object_set(a, props, "location", 8, loc);
        tpl_object_set(a, props, "unit", 4, unit);
        tpl_object_set(a, params, "type", 4, str_v(a, "object"));
        tpl_object_set(a, params, "properties", 10, props);
        tpl_object_set(a, fn, "name", 4, str_v(a, t ? "search" : "get_weather"));
        tpl_object_set(a, fn, "description", 11, str_v(a, "  Look something up.  "));
        tpl_object_set(a, fn, "parameters", 10, params);
        tpl_object_set(a, tool, "type", 4, str_v(a, "function"));
        tpl_object_set(a, tool, "function", 8, fn);
        tpl_array_push(a, tools, tool);
    }
    struct tpl_value *sys = tpl_value_object(a);
    tpl_object_set(a, sys, "role", 4, str_v(a, "system"));
    tpl_object_set(a, sys, "content", 7, str_v(a, "You are a helpful assistant."));
    tpl_array_push(a, msgs, sys);
    for (int i = 1; i < n_messages; i++) {
        struct tpl_value *m = tpl_value_object(a);
        char text[96];
        int kind = i == n_messages - 1 ? 0 : (i - 1) % 4;
        static const char *const roles[] = {"user", "assistant", "tool", "assistant"};
        tpl_object_set(a, m, "role", 4, str_v(a, roles[kind]));
        snprintf(text, sizeof(text),
                 kind == 3 ? "<think>turn %d</think>It is %d.5 degrees."
                           : "Message %d: weather in city #%d?",
                 i, i);
        tpl_object_set(a, m, "content", 7, str_v(a, text));
        if (kind == 1) {
            struct tpl_value *calls = tpl_value_array(a), *call = tpl_value_object(a),
                             *fn = tpl_value_object(a), *args = tpl_value_object(a);
            tpl_object_set(a, args, "location", 8, str_v(a, "Paris"));
            tpl_object_set(a, args, "days", 4, tpl_value_int(a, i));
            tpl_object_set(a, fn, "name", 4, str_v(a, "get_weather"));
            tpl_object_set(a, fn, "arguments", 9, args);
            tpl_object_set(a, call, "type", 4, str_v(a, "function"));
            tpl_object_set(a, call, "function", 8, fn);
            tpl_array_push(a, calls, call);
            tpl_object_set(a, m, "tool_calls", 10, calls);
        }
        tpl_array_push(a, msgs, m);
    }
    tpl_object_set(a, ctx, "messages", 8, msgs);
    tpl_object_set(a, ctx, "tools", 5, tools);
    tpl_object_set(a, ctx, "add_generation_prompt", 21, tpl_value_bool(1));
    tpl_object_set(a, ctx, "bos_token", 9, str_v(a, ""));
    tpl_object_set(a, ctx, "eos_token", 9, str_v(a, "<|im_end|>"));
    return ctx;
}

/* A template of ours in the style of the Qwen ones, so these tests run without ../shared. */
static const char k_chat_template[] =
    "{%- if tools %}<|im_start|>system\n{{ messages[0].content if messages[0].role == 'system' }}"
    "\n\n# Tools\n<tools>{% for tool in tools %}\n{{ tool | tojson }}{% endfor "
    "%}\n</tools><|im_end|>\n"
    "{%- endif %}\n"
    "{%- set ns = namespace(last_query=messages|length - 1) %}\n"
    "{%- for m in messages[::-1] %}{% if m.role == 'user' and ns.last_query == messages|length - 1 "
    "%}"
    "{% set ns.last_query = messages|length - 1 - loop.index0 %}{% endif %}{% endfor %}\n"
    "{%- for message in messages %}\n"
    "    {%- if message.role == 'user' or (message.role == 'system' and not loop.first) %}\n"
    "        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}\n"
    "    {%- elif message.role == 'assistant' %}\n"
    "        {%- set content = message.content.split('</think>')[-1].lstrip('\\n') %}\n"
    "        {{- '<|im_start|>assistant\\n' + content }}\n"
    "        {%- for tc in message.tool_calls | default([]) %}\n"
    "            {%- set tc = tc.function if tc.function is defined else tc %}\n"
    "            {{- '\\n<tool_call>\\n{\"name\": \"' + tc.name + '\", \"arguments\": ' + "
    "(tc.arguments | tojson) + '}\\n</tool_call>' }}\n"
    "        {%- endfor %}\n"
    "        {{- '<|im_end|>\\n' }}\n"
    "    {%- elif message.role == 'tool' %}\n"
    "        {%- if loop.first or messages[loop.index0 - 1].role != 'tool' %}{{- "
    "'<|im_start|>user' }}{% endif %}\n"
    "        {{- '\\n<tool_response>\\n' + message.content + '\\n</tool_response>' }}\n"
    "        {%- if loop.last or loop.nextitem.role != 'tool' %}{{- '<|im_end|>\\n' }}{% endif %}\n"
    "    {%- endif %}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{% endif %}";

struct thread_job {
    const struct chat_template *t;
    const struct tpl_value *ctx;
    const char *want;
    int mismatches;
};

static void *render_thread(void *arg) {
    struct thread_job *job = arg;
    for (int i = 0; i < 50; i++) {
        struct buf out;
        struct error err = {0};
        buf_init(&out);
        if (chat_template_render(job->t, job->ctx, &out, &err) != 0 || !out.data ||
            strcmp(out.data, job->want) != 0)
            job->mismatches++;
        buf_free(&out);
    }
    return NULL;
}

TEST(chat_template_threads) {
    struct chat_template *t;
    struct error err = {0};
    ASSERT(chat_template_parse(&t, k_chat_template, strlen(k_chat_template), &err) == 0);
    struct tpl_arena *a = tpl_arena_create(0);
    struct tpl_value *ctx = chat_context(a, 30);
    struct buf want;
    buf_init(&want);
    ASSERT_MSG(chat_template_render(t, ctx, &want, &err) == 0, "%s", err.msg);
    EXPECT(strstr(want.data, "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": "
                             "{\"location\": \"Paris\", \"days\": 2}}") != NULL);
    pthread_t th[4];
    struct thread_job jobs[4];
    for (int i = 0; i < 4; i++) {
        jobs[i] = (struct thread_job){.t = t, .ctx = ctx, .want = want.data};
        ASSERT(pthread_create(&th[i], NULL, render_thread, &jobs[i]) == 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        EXPECT_EQ_INT(jobs[i].mismatches, 0);
    }
    buf_free(&want);
    tpl_arena_free(a);
    chat_template_free(t);
}

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Renders a 30-message conversation with tools with our template and every shared template:
 * each render must take well under 10 ms. */
TEST(chat_template_speed) {
    static const char *const names[] = {"Qwen-Qwen2.5-7B-Instruct",
                                        "Qwen-Qwen3-0.6B",
                                        "Qwen-QwQ-32B",
                                        "Qwen3-Coder",
                                        "Qwen3.5-4B",
                                        "ollama-testdata-qwen38_chat_template"};
    struct tpl_arena *a = tpl_arena_create(0);
    struct tpl_value *ctx = chat_context(a, 30);
    for (int k = -1; k < (int)(sizeof(names) / sizeof(names[0])); k++) {
        char *src = NULL;
        size_t n = strlen(k_chat_template);
        if (k >= 0) {
            char rel[128];
            snprintf(rel, sizeof(rel), "templates/%s.jinja", names[k]);
            const char *path = test_model_path(rel);
            if (!path || !(src = test_read_file(path, &n))) continue;
        }
        struct chat_template *t;
        struct error err = {0};
        int rc = chat_template_parse(&t, src ? src : k_chat_template, n, &err);
        mem_free(src);
        EXPECT_MSG(rc == 0, "%s: %s", k >= 0 ? names[k] : "ours", err.msg);
        if (rc) continue;
        int reps = 20;
        double t0 = now_seconds();
        size_t len = 0;
        for (int i = 0; i < reps && !rc; i++) {
            struct buf out;
            buf_init(&out);
            rc = chat_template_render(t, ctx, &out, &err);
            len = out.len;
            buf_free(&out);
        }
        double ms = (now_seconds() - t0) * 1e3 / reps;
        EXPECT_MSG(rc == 0, "%s: %s", k >= 0 ? names[k] : "ours", err.msg);
        EXPECT_MSG(ms < 10.0, "%s: %.3f ms per render", k >= 0 ? names[k] : "ours", ms);
        printf("  %-40s %6zu bytes  %.3f ms/render\n", k >= 0 ? names[k] : "(test template)", len,
               ms);
        chat_template_free(t);
    }
    tpl_arena_free(a);
}

/* Every allocation in parse and render may fail: the result is ERR_NOMEM (or ERR_RANGE when the
 * render arena reports it) and nothing leaks. */
TEST(chat_template_alloc_failures) {
    struct tpl_arena *a = tpl_arena_create(0);
    struct tpl_value *ctx = chat_context(a, 6);
    int64_t live = mem_live_bytes();
    int n_fail = 0, n_ok = 0;
    for (int64_t k = 0; k < 100000 && n_ok < 3; k++) {
        struct chat_template *t = NULL;
        struct error err = {0};
        struct buf out;
        buf_init(&out);
        mem_fail_after(k);
        int rc = chat_template_parse(&t, k_chat_template, strlen(k_chat_template), &err);
        if (rc == 0) rc = chat_template_render(t, ctx, &out, &err);
        mem_fail_after(-1);
        if (rc == 0) {
            n_ok++;
        } else {
            n_fail++;
            EXPECT_MSG(rc == ERR_NOMEM || rc == ERR_RANGE, "fail after %lld: rc %d %s",
                       (long long)k, rc, err.msg);
            EXPECT(out.len == 0);
        }
        buf_free(&out);
        chat_template_free(t);
        EXPECT_MSG(mem_live_bytes() == live, "fail after %lld leaked %lld bytes", (long long)k,
                   (long long)(mem_live_bytes() - live));
        if (test_failed()) break;
    }
    EXPECT(n_fail > 10 && n_ok > 0);
    tpl_arena_free(a);
}

TEST(chat_template_strftime_now) {
    struct chat_template_opts opts = {.now_unix = 1700000000}; /* 2023-11-14T22:13:20Z */
    int code;
    struct error err = {0};
    char *got =
        render_opts("{{ strftime_now('%Y') }}|{{ strftime_now('%f') }}|{{ strftime_now('%%') }}",
                    NULL, &opts, &code, &err);
    EXPECT(got && strcmp(got, "2023|000000|%") == 0);
    mem_free(got);
}
