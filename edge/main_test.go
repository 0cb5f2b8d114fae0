package edge

import (
	"context"
	"flag"
	"fmt"
	"os"
	"testing"

	"perigee/edge/samplebackend"
)

// TestMain lets the test binary double as a sample backend, so the process
// actuator can start real children: "{self} sample-backend ADDR".
func TestMain(m *testing.M) {
	if len(os.Args) == 3 && os.Args[1] == "sample-backend" {
		err := samplebackend.Serve(context.Background(), os.Args[2], samplebackend.Options{Name: os.Args[2], Size: 32})
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	flag.Parse()
	code := m.Run()
	removeExamples()
	os.Exit(code)
}
