
/*
 * ha-optoutctl: a YAML file read as one document, for the readers of the
 * CLI's YAML files (the fleet file, the agent's --config).
 */

#include <stdio.h>
#include <yaml.h>

#include "hoctl.h"


/*
 * The document of F, an open file named FILE in the error
 * ("FILE:line:col: what libyaml found", PROBLEM when it says nothing).
 * F is closed either way.
 */
int
hoctl_yaml_load(FILE *f, const char *file, const char *problem,
    yaml_document_t *doc, char *err, size_t errlen)
{
    yaml_parser_t   parser;

    yaml_parser_initialize(&parser);
    yaml_parser_set_input_file(&parser, f);

    if (!yaml_parser_load(&parser, doc)) {
        snprintf(err, errlen, "%s:%zu:%zu: %s", file,
                 parser.problem_mark.line + 1,
                 parser.problem_mark.column + 1,
                 parser.problem ? parser.problem : problem);
        yaml_parser_delete(&parser);
        fclose(f);
        return -1;
    }

    yaml_parser_delete(&parser);
    fclose(f);

    return 0;
}
