#!/bin/bash
# The documentation against the tool: every link and anchor resolves, the README
# stays a front door (at most 300 lines), every `bitplan COMMAND --option` the
# README and docs/ show is an option `bitplan COMMAND --help` lists, the CLI
# reference and `bitplan help` list the same options, every export format is
# documented, every page under docs/ starts with its contents.
source "$SRC/tests/lib.sh"
export LC_ALL=C.UTF-8

pages=("$SRC/README.md" "$SRC"/docs/*.md)

# prose: the lines outside fenced code blocks
prose() { awk '/^```/ { code = !code; next } !code' "$1"; }
# the anchors of a page: its headings as GitHub spells them
anchors() {
    prose "$1" | grep -E '^#{1,6} ' | sed -E 's/^#+ +//' | tr '[:upper:]' '[:lower:]' |
        sed -E 's/[^[:alnum:]_ -]//g; s/ /-/g'
}

# 1. links and anchors
for page in "${pages[@]}"; do
    dir=$(dirname "$page")
    while IFS= read -r link; do
        case "$link" in http*|mailto:*) continue ;; esac
        file=${link%%#*}
        anchor=
        [[ "$link" == *"#"* ]] && anchor=${link#*#}
        target=$page
        [ -n "$file" ] && target="$dir/$file"
        if [ ! -e "$target" ]; then
            bad "${page#$SRC/}: link '$link': no file ${target#$SRC/}"
            continue
        fi
        if [ -n "$anchor" ]; then
            anchors "$target" | grep -qxF -- "$anchor" && ok ||
                bad "${page#$SRC/}: link '$link': no heading #$anchor in ${target#$SRC/}"
        else
            ok
        fi
    done < <(prose "$page" | grep -oE '\]\([^) ]+\)' | sed -E 's/^\]\((.*)\)$/\1/')
done

# 2. the front door stays short; every page has its contents
n=$(wc -l <"$SRC/README.md")
check "README.md is at most 300 lines ($n)" test "$n" -le 300
for page in "$SRC"/docs/*.md; do
    head -20 "$page" | grep -qE '^(\*\*Contents\*\*|- \[.*\]\(#)' && ok ||
        bad "${page#$SRC/}: no contents at its top"
done

# 3. every `bitplan COMMAND ... --option` shown is an option of that command
commands=$("$BITPLAN" help | awk '/^commands:/ { on = 1; next } /^options:/ { on = 0 } on' |
           grep -oE '^  [a-z]+' | sort -u)
while IFS= read -r use; do
    page=${use%%:*}
    use=${use#*:}
    cmd=$(grep -oE '(^|[ /`])bitplan [a-z]+' <<<"$use" | head -1 | awk '{print $2}')
    echo "$commands" | grep -qx " *$cmd" || continue            # prose: "bitplan is ..."
    "$BITPLAN" "$cmd" --help >help.txt 2>&1
    rest=${use#*bitplan $cmd}
    rest=${rest%%#*}                                            # a shell comment
    for opt in $(grep -oE '(^| )--[a-z][a-z-]*' <<<"$rest"); do
        grep -qE -- "(^| |\[)$opt( |\]|$|,|=)" help.txt && ok ||
            bad "${page#$SRC/}: 'bitplan $cmd $opt': not in 'bitplan $cmd --help'"
    done
done < <(for page in "${pages[@]}"; do
             # code spans and code-block lines holding "bitplan COMMAND"
             { grep -oE '`[^`]*bitplan [a-z]+[^`]*`' "$page"
               awk '/^```/ { code = !code; next } code' "$page" | grep -E '(^|[ /])bitplan [a-z]+'
             } | sed "s|^|$page:|"
         done)

# 4. the CLI reference and the commands' help list the same options
{ "$BITPLAN" help; for c in $commands; do "$BITPLAN" "$c" --help; done; } 2>/dev/null |
    grep -oE '^  (-[a-z], )?--[a-z][a-z-]*' | grep -oE -- '--[a-z-]+' | sort -u >help_opts.txt
grep -oE -- '--[a-z][a-z-]*' "$SRC/docs/cli.md" | sort -u >doc_all.txt
grep -oE '^\| `[^|]*`' "$SRC/docs/cli.md" | grep -oE -- '--[a-z][a-z-]*' | sort -u >doc_opts.txt
while read -r opt; do
    grep -qxF -- "$opt" doc_all.txt && ok || bad "docs/cli.md does not describe $opt (in bitplan's help)"
done <help_opts.txt
while read -r opt; do
    grep -qxF -- "$opt" help_opts.txt && ok || bad "docs/cli.md lists $opt, which no command's help does"
done <doc_opts.txt

# 5. every export format bitplan knows is documented, and only those
formats=$("$BITPLAN" export --help | tr '\n' ' ' | grep -oE 'F is [a-z, ]+ or [a-z]+' | sed -E 's/F is //; s/,/ /g; s/ or / /g')
check "export formats found in --help" test -n "$formats"
for f in $formats; do
    grep -q "^| \`$f\`\|^### \`$f\`\|\`$f\`" "$SRC/docs/formats.md" && ok || bad "docs/formats.md: no $f export"
done
finish
