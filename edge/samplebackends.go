package edge

import (
	"context"
	"fmt"
	"log/slog"
	"net"

	"perigee/edge/config"
	"perigee/edge/samplebackend"
)

// StartSampleBackends runs the config's built-in demo backends until ctx ends.
func StartSampleBackends(ctx context.Context, cfg *config.Config, log *slog.Logger) error {
	for _, sb := range cfg.SampleBackends {
		ln, err := net.Listen("tcp", sb.Listen)
		if err != nil {
			return fmt.Errorf("sample_backends %s: %w", sb.Name, err)
		}
		go func() {
			if err := samplebackend.ServeListener(ctx, ln, sb.Options); err != nil {
				log.Error("sample backend stopped", "name", sb.Name, "err", err)
			}
		}()
	}
	return nil
}
