package lua

import (
	"errors"
	"fmt"
	"reflect"
	"strings"

	glua "github.com/yuin/gopher-lua"
	"github.com/yuin/gopher-lua/ast"
	"github.com/yuin/gopher-lua/parse"
)

// Source is bounded before it reaches gopher-lua's parser and compiler,
// neither of which can be interrupted: its size (Limits.SourceBytes), the
// nesting of brackets and blocks (the parser's stack grows with it), and
// the depth of the syntax tree (the compiler recurses over it).
const (
	maxNesting   = 200
	maxTreeDepth = 1000
	// maxFunctions bounds the functions of one chunk: gopher-lua's
	// compiler reserves 17 KB for each, so 64 KiB of empty functions
	// would hold 64 MiB after one step nothing can interrupt.
	maxFunctions = 1000
)

// concatFunc is the global that every `..` chain calls (see VM.concat).
// The name is not an identifier, so no script refers to it by accident.
const concatFunc = "\x00concat"

func (vm *VM) compile(name, src string) (*glua.FunctionProto, error) {
	return compile(name, src, vm.limits.SourceBytes)
}

func compile(name, src string, maxBytes int) (*glua.FunctionProto, error) {
	if len(src) > maxBytes {
		return nil, &Error{Msg: fmt.Sprintf("%s: source of %d bytes exceeds the limit of %d", name, len(src), maxBytes)}
	}
	if line, problem := checkShape(src); problem != "" {
		return nil, &Error{Msg: fmt.Sprintf("%s:%d: %s", name, line, problem)}
	}
	chunk, err := parse.Parse(strings.NewReader(src), name)
	if err != nil {
		var pe *parse.Error
		if errors.As(err, &pe) {
			if pe.Pos.Line == parse.EOF {
				return nil, &Error{Msg: fmt.Sprintf("%s: at end of file: %s", name, pe.Message)}
			}
			return nil, &Error{Msg: fmt.Sprintf("%s:%d: %s near '%s'", name, pe.Pos.Line, pe.Message, pe.Token)}
		}
		return nil, &Error{Msg: fmt.Sprintf("%s: %v", name, err)}
	}
	t := &tree{}
	t.walk(reflect.ValueOf(chunk), 0)
	if t.deepAt != 0 {
		return nil, &Error{Msg: fmt.Sprintf("%s:%d: expression nested deeper than %d levels", name, t.deepAt, maxTreeDepth)}
	}
	proto, err := glua.Compile(chunk, name)
	if err != nil {
		return nil, &Error{Msg: fmt.Sprintf("%s: %v", name, err)}
	}
	return proto, nil
}

// checkShape scans src as Lua tokens and reports the first line where
// brackets and blocks nest deeper than maxNesting or where the chunk has
// more than maxFunctions functions, and which; "" when neither.
func checkShape(src string) (int, string) {
	depth, line, functions := 0, 1, 0
	for i := 0; i < len(src); {
		c := src[i]
		switch {
		case c == '\n':
			line++
			i++
		case c == '-' && strings.HasPrefix(src[i:], "--"):
			i += 2
			if end, ok := longBracket(src, i); ok {
				line += strings.Count(src[i:end], "\n")
				i = end
			} else if k := strings.IndexByte(src[i:], '\n'); k >= 0 {
				i += k
			} else {
				i = len(src)
			}
		case c == '[' && isLongBracketOpen(src, i):
			end, _ := longBracket(src, i)
			line += strings.Count(src[i:end], "\n")
			i = end
		case c == '"' || c == '\'':
			i++
			for i < len(src) && src[i] != c && src[i] != '\n' {
				if src[i] == '\\' && i+1 < len(src) {
					if src[i+1] == '\n' {
						line++
					}
					i++
				}
				i++
			}
			i++
		case c == '(' || c == '[' || c == '{':
			if depth++; depth > maxNesting {
				return line, tooDeep
			}
			i++
		case c == ')' || c == ']' || c == '}':
			depth = max(depth-1, 0)
			i++
		case c == '_' || isAlpha(c):
			j := i
			for j < len(src) && (src[j] == '_' || isAlpha(src[j]) || (src[j] >= '0' && src[j] <= '9')) {
				j++
			}
			switch src[i:j] {
			case "function", "do", "if", "repeat":
				if depth++; depth > maxNesting {
					return line, tooDeep
				}
				if src[i:j] == "function" {
					if functions++; functions > maxFunctions {
						return line, fmt.Sprintf("more than %d functions", maxFunctions)
					}
				}
			case "end", "until":
				depth = max(depth-1, 0)
			}
			i = j
		default:
			i++
		}
	}
	return 0, ""
}

var tooDeep = fmt.Sprintf("nesting deeper than %d levels", maxNesting)

// isLongBracketOpen reports whether src[i:] starts [[ or [==[.
func isLongBracketOpen(src string, i int) bool {
	j := i + 1
	for j < len(src) && src[j] == '=' {
		j++
	}
	return j < len(src) && src[j] == '['
}

// longBracket returns the end of a long string or comment starting at i,
// or false when none starts there.
func longBracket(src string, i int) (int, bool) {
	if i >= len(src) || src[i] != '[' || !isLongBracketOpen(src, i) {
		return i, false
	}
	j := i + 1
	for src[j] == '=' {
		j++
	}
	closing := "]" + src[i+1:j] + "]"
	if k := strings.Index(src[j+1:], closing); k >= 0 {
		return j + 1 + k + len(closing), true
	}
	return len(src), true
}

var (
	exprType   = reflect.TypeFor[ast.Expr]()
	concatType = reflect.TypeFor[*ast.StringConcatOpExpr]()
)

// tree walks a parsed chunk: it notes the first line where the tree is
// deeper than maxTreeDepth, and replaces each chain a .. b .. c with one
// call of the bounded concat.
type tree struct{ deepAt int }

func (t *tree) walk(v reflect.Value, depth int) {
	if t.deepAt != 0 {
		return
	}
	switch v.Kind() {
	case reflect.Interface, reflect.Pointer:
		if v.IsNil() {
			return
		}
		if v.Kind() == reflect.Pointer && v.Elem().Kind() == reflect.Struct {
			if depth++; depth > maxTreeDepth {
				t.deepAt = 1
				if n, ok := v.Interface().(ast.PositionHolder); ok {
					t.deepAt = max(n.Line(), 1)
				}
				return
			}
		}
		t.walk(v.Elem(), depth)
	case reflect.Struct:
		for i := range v.NumField() {
			if f := v.Field(i); f.CanSet() {
				t.child(f, depth)
			}
		}
	case reflect.Slice:
		for i := range v.Len() {
			t.child(v.Index(i), depth)
		}
	}
}

// child walks v after replacing a concatenation held in it.
func (t *tree) child(v reflect.Value, depth int) {
	if v.Type() == exprType && !v.IsNil() && v.Elem().Type() == concatType {
		call := concatCall(v.Interface().(*ast.StringConcatOpExpr))
		if len(call.Args) > maxNesting { // one register each
			t.deepAt = max(call.Line(), 1)
			return
		}
		v.Set(reflect.ValueOf(call))
	}
	t.walk(v, depth)
}

// concatCall turns the right-nested chain e into concat(a, b, c, ...). The
// call is marked as parenthesised so that it yields one value and is never
// a tail call, as the operator it replaces.
func concatCall(e *ast.StringConcatOpExpr) *ast.FuncCallExpr {
	var args []ast.Expr
	var x ast.Expr = e
	for {
		c, ok := x.(*ast.StringConcatOpExpr)
		if !ok {
			break
		}
		args = append(args, c.Lhs)
		x = c.Rhs
	}
	args = append(args, x)
	fn := &ast.IdentExpr{Value: concatFunc}
	fn.SetLine(e.Line())
	fn.SetLastLine(e.LastLine())
	call := &ast.FuncCallExpr{Func: fn, Args: args, AdjustRet: true}
	call.SetLine(e.Line())
	call.SetLastLine(e.LastLine())
	return call
}
