package loopback

import "testing"

func TestHost(t *testing.T) {
	for s, want := range map[string]bool{
		"127.0.0.1": true, "127.0.0.5:9901": true, "[::1]:9443": true, "::1": true, "[::1]": true,
		"localhost": true, "LocalHost:80": true,
		"": false, ":9443": false, "0.0.0.0:9443": false, "[::]:9443": false, "192.0.2.1": false,
		"localhost.evil.example": false, "::ffff:127.0.0.1": true, "127.0.0.1.nip.io:80": false,
	} {
		if got := Host(s); got != want {
			t.Errorf("Host(%q) = %v, want %v", s, got, want)
		}
	}
}
