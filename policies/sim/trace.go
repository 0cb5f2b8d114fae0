// Package sim replays a metrics trace through the policy engine with a
// simulated clock and a simple queueing model of the service, so a policy
// can be watched against a flash sale or a slow backend before it touches
// production.
package sim

import (
	"bufio"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Row is one service's demand at one instant of a trace.
type Row struct {
	T         float64 `json:"t"` // seconds from the trace start
	Service   string  `json:"service"`
	RPS       float64 `json:"rps"`        // offered load
	LatencyMS float64 `json:"latency_ms"` // service time of one request at low load; default 20
	Capacity  float64 `json:"capacity"`   // requests/s one replica serves; default 100
	ErrorRate float64 `json:"error_rate"` // share that fails whatever the load
}

// Tick is every row sharing one instant.
type Tick struct {
	T    float64
	Rows []Row
}

// ReadTrace reads a CSV (header with t, service, rps and optionally
// latency_ms, capacity, error_rate; lines starting with # are comments) or,
// for .jsonl and .json files, one JSON object per line.
func ReadTrace(path string) ([]Tick, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("trace: %w", err)
	}
	defer f.Close()
	var rows []Row
	switch strings.ToLower(filepath.Ext(path)) {
	case ".jsonl", ".json", ".ndjson":
		rows, err = readJSONLines(f, path)
	default:
		rows, err = readCSV(f, path)
	}
	if err != nil {
		return nil, err
	}
	return group(rows, path)
}

func readJSONLines(r io.Reader, path string) ([]Row, error) {
	var rows []Row
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		row := Row{T: math.NaN(), RPS: math.NaN()}
		dec := json.NewDecoder(strings.NewReader(text))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&row); err != nil {
			return nil, fmt.Errorf("%s:%d: %w", path, line, err)
		}
		if err := row.check(); err != nil {
			return nil, fmt.Errorf("%s:%d: %w", path, line, err)
		}
		rows = append(rows, row)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return rows, nil
}

func readCSV(r io.Reader, path string) ([]Row, error) {
	cr := csv.NewReader(r)
	cr.Comment = '#'
	cr.TrimLeadingSpace = true
	header, err := cr.Read()
	if err != nil {
		return nil, fmt.Errorf("%s: header: %w", path, err)
	}
	col := map[string]int{}
	for i, h := range header {
		col[strings.TrimSpace(h)] = i
	}
	for _, need := range []string{"t", "service", "rps"} {
		if _, ok := col[need]; !ok {
			return nil, fmt.Errorf("%s: header lacks column %q", path, need)
		}
	}
	var rows []Row
	for {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		line, _ := cr.FieldPos(0)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		num := func(name string, def float64) (float64, error) {
			i, ok := col[name]
			if !ok || strings.TrimSpace(rec[i]) == "" {
				return def, nil
			}
			v, err := strconv.ParseFloat(strings.TrimSpace(rec[i]), 64)
			if err != nil {
				return 0, fmt.Errorf("%s:%d: column %s: %w", path, line, name, err)
			}
			return v, nil
		}
		row := Row{Service: strings.TrimSpace(rec[col["service"]])}
		for _, f := range []struct {
			name string
			dst  *float64
			def  float64
		}{{"t", &row.T, math.NaN()}, {"rps", &row.RPS, math.NaN()}, {"latency_ms", &row.LatencyMS, 0}, {"capacity", &row.Capacity, 0}, {"error_rate", &row.ErrorRate, 0}} {
			if *f.dst, err = num(f.name, f.def); err != nil {
				return nil, err
			}
		}
		if err := row.check(); err != nil {
			return nil, fmt.Errorf("%s:%d: %w", path, line, err)
		}
		rows = append(rows, row)
	}
	return rows, nil
}

// check fills defaults and refuses values the model cannot use.
func (r *Row) check() error {
	if r.LatencyMS == 0 {
		r.LatencyMS = 20
	}
	if r.Capacity == 0 {
		r.Capacity = 100
	}
	switch {
	case r.Service == "":
		return errors.New("no service")
	case math.IsNaN(r.T) || r.T < 0 || math.IsInf(r.T, 0):
		return errors.New("t must be seconds ≥ 0")
	case math.IsNaN(r.RPS) || r.RPS < 0 || math.IsInf(r.RPS, 0):
		return errors.New("rps must be a number ≥ 0")
	case !(r.LatencyMS > 0) || math.IsInf(r.LatencyMS, 0):
		return errors.New("latency_ms must be positive")
	case !(r.Capacity > 0) || math.IsInf(r.Capacity, 0):
		return errors.New("capacity must be positive")
	case !(r.ErrorRate >= 0 && r.ErrorRate <= 1):
		return errors.New("error_rate must be in [0, 1]")
	}
	return nil
}

func group(rows []Row, path string) ([]Tick, error) {
	if len(rows) == 0 {
		return nil, fmt.Errorf("%s: no samples", path)
	}
	var ticks []Tick
	for _, r := range rows {
		n := len(ticks)
		switch {
		case n > 0 && r.T == ticks[n-1].T:
			ticks[n-1].Rows = append(ticks[n-1].Rows, r)
		case n > 0 && r.T < ticks[n-1].T:
			return nil, fmt.Errorf("%s: t goes back from %v to %v", path, ticks[n-1].T, r.T)
		default:
			ticks = append(ticks, Tick{T: r.T, Rows: []Row{r}})
		}
	}
	return ticks, nil
}
