package config

import (
	"fmt"
	"time"

	"perigee/units"
)

// setDefaults fills what the file leaves out: the node's own settings here,
// each part's through its SetDefaults.
func (c *Config) setDefaults() {
	if c.Node.ID == "" {
		c.Node.ID = "local"
	}
	if c.Node.Region == "" {
		c.Node.Region = "local"
	}
	if c.Node.Capacity == 0 {
		c.Node.Capacity = 1000
	}
	if c.Listen.Admin == "" {
		c.Listen.Admin = "127.0.0.1:9901"
	}
	c.Timeouts.SetDefaults()
	if c.ACME != nil {
		c.ACME.SetDefaults()
	}
	setDur(&c.Timeouts.ReadHeader, 10*time.Second)
	setDur(&c.Timeouts.Drain, 30*time.Second)
	if c.Limits.MaxHeaderBytes == 0 {
		c.Limits.MaxHeaderBytes = 64 << 10
	}
	c.Limits.Connections.SetDefaults()
	if c.AccessLog.Enabled == nil {
		on := true
		c.AccessLog.Enabled = &on
	}
	if c.AccessLog.Sample == nil {
		all := 1.0
		c.AccessLog.Sample = &all
	}
	for _, s := range c.Services {
		if s != nil {
			s.SetDefaults()
		}
	}
	for name, pc := range c.Policies {
		if pc != nil {
			pc.Name = name
			pc.SetDefaults()
		}
	}
	for i, r := range c.Routes {
		if r != nil && r.Name == "" {
			r.Name = fmt.Sprintf("route-%d", i)
		}
	}
	for i := range c.SampleBackends {
		if c.SampleBackends[i].Name == "" {
			c.SampleBackends[i].Name = c.SampleBackends[i].Listen
		}
		if c.SampleBackends[i].Size == 0 {
			c.SampleBackends[i].Size = 512 // as `perigee sample-backend` answers
		}
	}
}

func setDur(d *units.Duration, def time.Duration) {
	if *d == 0 {
		*d = units.Duration(def)
	}
}
