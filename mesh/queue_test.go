package mesh

import (
	"bytes"
	"testing"

	"github.com/hashicorp/memberlist"
)

// named is a broadcast of a name and a fixed-length body.
type named struct {
	name string
	msg  []byte
}

func (b named) Message() []byte                         { return b.msg }
func (b named) Invalidates(o memberlist.Broadcast) bool { return false }
func (b named) Finished()                               {}
func (b named) Name() string                            { return b.name }

// The case of memberlist#263: a queue of one broadcast, replaced by name,
// then two more of the same length. All three must be sent; memberlist's
// queue alone loses one of them.
func TestBroadcastQueueLosesNoneOfOneLength(t *testing.T) {
	sends := func(q *memberlist.TransmitLimitedQueue) int {
		for _, b := range []named{{"a", []byte("a1")}, {"a", []byte("a2")}, {"b", []byte("b1")}, {"c", []byte("c1")}} {
			q.QueueBroadcast(b)
		}
		got := q.GetBroadcasts(0, 1400)
		for _, m := range got {
			if bytes.Equal(m, []byte("a1")) {
				t.Error("a replaced broadcast was sent")
			}
		}
		return len(got)
	}
	one := func() int { return 1 }
	if n := sends(&memberlist.TransmitLimitedQueue{RetransmitMult: 1, NumNodes: one}); n == 3 {
		t.Log("memberlist's own queue lost nothing here: the upstream bug may be fixed")
	}
	if n := sends(newBroadcastQueue(1, one)); n != 3 {
		t.Errorf("%d of 3 broadcasts sent", n)
	}
}
