package main

import (
	"fmt"
	"io"
	"strings"
)

// completion is `perigee completion bash|zsh|fish`. The scripts complete
// command names from the command table and ask the binary for a command's
// flags (its -h), so they never fall behind it.
func completion(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("completion", stderr)
	fs.Usage = func() { fmt.Fprintln(stderr, "usage: perigee completion bash|zsh|fish") }
	shell, err := parseFile(fs, args)
	if err != nil {
		return err
	}
	names := make([]string, 0, len(commands))
	for _, c := range commands {
		names = append(names, c.name)
	}
	words := strings.Join(names, " ")
	switch shell {
	case "bash":
		fmt.Fprintf(stdout, bashCompletion, words)
	case "zsh":
		fmt.Fprintf(stdout, "autoload -U +X bashcompinit && bashcompinit\n"+bashCompletion, words)
	case "fish":
		fmt.Fprintf(stdout, fishCompletion, words)
	default:
		fs.Usage()
		return errUsage
	}
	return nil
}

// Both read the flags from the "  -name" lines of a command's -h.
const bashCompletion = `# perigee completion for bash; load with: source <(perigee completion bash)
_perigee() {
	local cur=${COMP_WORDS[COMP_CWORD]} sub=${COMP_WORDS[1]}
	if [ "$COMP_CWORD" -eq 1 ]; then
		COMPREPLY=($(compgen -W "%s" -- "$cur"))
		return
	fi
	case $sub in
	policy) [ "$COMP_CWORD" -eq 2 ] && { COMPREPLY=($(compgen -W "test" -- "$cur")); return; }; sub="policy ${COMP_WORDS[2]}" ;;
	wasm) [ "$COMP_CWORD" -eq 2 ] && { COMPREPLY=($(compgen -W "init build" -- "$cur")); return; }; sub="wasm ${COMP_WORDS[2]}" ;;
	completion) COMPREPLY=($(compgen -W "bash zsh fish" -- "$cur")); return ;;
	esac
	if [[ $cur == -* ]]; then
		COMPREPLY=($(compgen -W "$(${COMP_WORDS[0]} $sub -h 2>&1 | sed -n 's/^  -\([a-z0-9-]*\).*/--\1/p')" -- "$cur"))
		return
	fi
	COMPREPLY=($(compgen -f -- "$cur"))
}
complete -o filenames -F _perigee perigee
`

const fishCompletion = `# perigee completion for fish; load with: perigee completion fish | source
function __perigee_flags
	set -l words (commandline -opc)
	set -l sub $words[2]
	contains -- $sub policy wasm; and set sub $sub $words[3]
	perigee $sub -h 2>&1 | string replace -rf '^  -([a-z0-9-]+).*' -- '--$1'
end
complete -c perigee -f -n __fish_use_subcommand -a "%s"
complete -c perigee -f -n '__fish_seen_subcommand_from policy' -a test
complete -c perigee -f -n '__fish_seen_subcommand_from wasm' -a "init build"
complete -c perigee -f -n '__fish_seen_subcommand_from completion' -a "bash zsh fish"
complete -c perigee -n 'not __fish_use_subcommand; and string match -q -- "-*" (commandline -ct)' -a '(__perigee_flags)'
`
