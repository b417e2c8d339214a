/*
 * yamltree.h - a small, strict YAML document tree built from libyaml events.
 *
 * Each node remembers its line and column, so every config error can name
 * the place it comes from.  Aliases are refused (no alias bombs), documents
 * are limited in depth and node count, and mapping keys must be scalars.
 */
#ifndef BP_YAMLTREE_H
#define BP_YAMLTREE_H

#include <stddef.h>

#include "../../common/bp_error.h"

typedef enum bp_ynode_type { BP_Y_SCALAR, BP_Y_SEQ, BP_Y_MAP } bp_ynode_type;

typedef struct bp_ynode {
    bp_ynode_type type;
    int line, col;            /* 1-based */
    int quoted;               /* scalar written with quotes */
    char *str;                /* scalar text */
    struct bp_ynode **items;  /* seq: n items; map: key, value pairs (2n) */
    size_t n;
    size_t stored;            /* items allocated (internal) */
} bp_ynode;

/* Parse text into a tree (NULL root for an empty document). */
int bp_yaml_parse(const char *text, size_t size, const char *label,
                  bp_ynode **root, bp_error *err);
void bp_ynode_free(bp_ynode *n);
const char *bp_ynode_type_name(const bp_ynode *n);

#endif
