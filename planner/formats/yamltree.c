/*
 * yamltree.c - libyaml event stream -> bp_ynode tree with positions.
 */
#include "yamltree.h"

#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#define YAML_MAX_DEPTH 64
/* Nodes a document may have: 100,000, or one per 4 bytes of a larger file
 * (aliases are refused, so a document's nodes are bounded by its size; a
 * plan takes about 30 bytes per node, a 100,000-layer plan 1.3 M nodes). */
#define YAML_MIN_NODES 100000

typedef struct builder {
    const char *label;
    bp_error *err;
    bp_ynode *stack[YAML_MAX_DEPTH];
    int depth;
    size_t nodes, max_nodes;
    bp_ynode *root;
} builder;

const char *bp_ynode_type_name(const bp_ynode *n)
{
    if (!n)
        return "nothing";
    return n->type == BP_Y_SCALAR ? "a scalar" : n->type == BP_Y_SEQ ? "a list" : "a mapping";
}

void bp_ynode_free(bp_ynode *n)
{
    if (!n)
        return;
    for (size_t i = 0; i < n->stored; i++)
        bp_ynode_free(n->items[i]);
    free(n->items);
    free(n->str);
    free(n);
}

static int attach(builder *b, bp_ynode *node)
{
    if (b->depth == 0) {
        if (b->root) {
            int line = node->line;
            bp_ynode_free(node);
            return bp_fail(b->err, "%s:%d: more than one YAML document", b->label, line);
        }
        b->root = node;
        return 0;
    }
    bp_ynode *parent = b->stack[b->depth - 1];
    size_t count = parent->stored;
    if (count == 0 || (count >= 4 && (count & (count - 1)) == 0)) {   /* capacity doubles */
        bp_ynode **items = realloc(parent->items, (count ? 2 * count : 4) * sizeof *items);
        if (!items) {
            bp_ynode_free(node);
            return bp_fail(b->err, "%s: out of memory", b->label);
        }
        parent->items = items;
    }
    parent->items[count] = node;
    parent->stored++;
    if (parent->type == BP_Y_MAP) {
        if (count % 2 == 0 && node->type != BP_Y_SCALAR)
            return bp_fail(b->err, "%s:%d:%d: mapping keys must be plain scalars",
                           b->label, node->line, node->col);
        /* n counts completed pairs; a lone key is stored at index 2n */
        if (count % 2 == 1)
            parent->n++;
    } else {
        parent->n++;
    }
    return 0;
}

static bp_ynode *new_node(builder *b, bp_ynode_type type, const yaml_event_t *ev)
{
    if (++b->nodes > b->max_nodes) {
        bp_fail(b->err, "%s: more than %zu YAML nodes", b->label, b->max_nodes);
        return NULL;
    }
    bp_ynode *n = calloc(1, sizeof *n);
    if (!n) {
        bp_fail(b->err, "%s: out of memory", b->label);
        return NULL;
    }
    n->type = type;
    n->line = (int)ev->start_mark.line + 1;
    n->col = (int)ev->start_mark.column + 1;
    return n;
}

static int on_event(builder *b, const yaml_event_t *ev)
{
    bp_ynode *n;
    switch (ev->type) {
    case YAML_ALIAS_EVENT:
        return bp_fail(b->err, "%s:%d:%d: YAML aliases are not supported", b->label,
                       (int)ev->start_mark.line + 1, (int)ev->start_mark.column + 1);
    case YAML_SCALAR_EVENT:
        if (!(n = new_node(b, BP_Y_SCALAR, ev)))
            return -1;
        n->str = strndup((const char *)ev->data.scalar.value, ev->data.scalar.length);
        n->quoted = ev->data.scalar.style != YAML_PLAIN_SCALAR_STYLE;
        if (!n->str || strlen(n->str) != ev->data.scalar.length) {
            bp_ynode_free(n);
            return bp_fail(b->err, "%s:%d: invalid scalar (NUL byte or out of memory)",
                           b->label, (int)ev->start_mark.line + 1);
        }
        return attach(b, n);
    case YAML_SEQUENCE_START_EVENT:
    case YAML_MAPPING_START_EVENT:
        if (b->depth >= YAML_MAX_DEPTH)
            return bp_fail(b->err, "%s:%d: YAML nested deeper than %d levels", b->label,
                           (int)ev->start_mark.line + 1, YAML_MAX_DEPTH);
        n = new_node(b, ev->type == YAML_MAPPING_START_EVENT ? BP_Y_MAP : BP_Y_SEQ, ev);
        if (!n || attach(b, n) < 0)
            return -1;
        b->stack[b->depth++] = n;
        return 0;
    case YAML_SEQUENCE_END_EVENT:
    case YAML_MAPPING_END_EVENT:
        b->depth--;
        return 0;
    default:
        return 0;
    }
}

int bp_yaml_parse(const char *text, size_t size, const char *label,
                  bp_ynode **root, bp_error *err)
{
    yaml_parser_t parser;
    builder b;
    memset(&b, 0, sizeof b);
    b.label = label;
    b.err = err;
    b.max_nodes = size / 4 > YAML_MIN_NODES ? size / 4 : YAML_MIN_NODES;
    *root = NULL;
    if (!yaml_parser_initialize(&parser))
        return bp_fail(err, "%s: cannot initialise the YAML parser", label);
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, size);
    int rc = 0, done = 0;
    while (!done && rc == 0) {
        yaml_event_t ev;
        if (!yaml_parser_parse(&parser, &ev)) {
            rc = bp_fail(err, "%s:%d:%d: YAML syntax error: %s", label,
                         (int)parser.problem_mark.line + 1,
                         (int)parser.problem_mark.column + 1,
                         parser.problem ? parser.problem : "unknown");
            break;
        }
        rc = on_event(&b, &ev);
        done = ev.type == YAML_STREAM_END_EVENT;
        yaml_event_delete(&ev);
    }
    yaml_parser_delete(&parser);
    if (rc < 0) {
        /* free the partial tree from its root */
        bp_ynode_free(b.root);
        return -1;
    }
    *root = b.root;
    return 0;
}
