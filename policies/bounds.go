package policies

import (
	"fmt"
	"unicode/utf8"
)

// What one evaluation may produce. Actions and log records live in Go
// memory, outside the script's heap budget, until the evaluation ends, so
// each has a count of its own: far above what any fleet's policy needs,
// far below what a loop can make within a deadline.
const (
	maxActions    = 1024
	maxScriptLogs = 100
	// maxActionString bounds each string an action keeps (a service,
	// backend or route name, a reason): the decision log holds
	// LogSize of them, long after the evaluation's budget is spent.
	maxActionString = 256
	// maxScriptLogBytes bounds one record a script logs: with
	// maxScriptLogs of them an evaluation writes at most 100 KiB.
	maxScriptLogBytes = 1024
	// maxMemos bounds what a policy remembers of its last decisions, one
	// per thing it named (see repeat): the names are the script's, so
	// without it a policy naming new backends every evaluation would grow
	// the node's heap for good.
	maxMemos = 4 * maxActions
	// decisionLinesPerSecond bounds the decision lines in the node's log:
	// a script can make maxActions decisions an evaluation, rejected ones
	// again every time. GET /decisions and shipping keep every one.
	decisionLinesPerSecond = 100
	// maxRejected bounds why a decision failed, kept LogSize deep and
	// shipped: an actuator's or target's error may quote what answered.
	maxRejected = 1024
)

// checkLength refuses a string an action would keep beyond
// maxActionString; the VM adds the script's line.
func checkLength(what, s string) error {
	if len(s) > maxActionString {
		return fmt.Errorf("%s is %d bytes, at most %d", what, len(s), maxActionString)
	}
	return nil
}

// errTooManyActions stops an evaluation at the call that went past
// maxActions; the VM adds the script's line.
var errTooManyActions = fmt.Errorf("more than %d actions in one evaluation", maxActions)

// scriptLog writes what a script log()s or print()s, up to maxScriptLogs
// records an evaluation; the rest are counted and said once at its end.
func (p *policy) scriptLog(msg string) {
	if p.logged++; p.logged > maxScriptLogs {
		return
	}
	if len(msg) > maxScriptLogBytes {
		cut := maxScriptLogBytes
		for cut > 0 && !utf8.RuneStart(msg[cut]) {
			cut--
		}
		msg = fmt.Sprintf("%s… (%d more bytes cut)", msg[:cut], len(msg)-cut)
	}
	p.e.cfg.ScriptLog.Info(msg, "policy", p.spec.Name)
}

// endScriptLog says how many records the evaluation dropped, if any.
func (p *policy) endScriptLog() {
	if p.logged > maxScriptLogs {
		p.e.cfg.ScriptLog.Warn("policy logged more than its limit in one evaluation; the rest were dropped",
			"policy", p.spec.Name, "limit", maxScriptLogs, "dropped", p.logged-maxScriptLogs)
	}
	p.logged = 0
}
