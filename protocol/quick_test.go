package protocol

import (
	"errors"
	"testing"
)

func TestQuickDecode(t *testing.T) {
	m, err := DecodeClient([]byte(`{"sys":1,"channel":"room1","query":{"from":"golden","n":[1,2]},"id":1}`), Limits{})
	if err != nil || m.Channel != "room1" || string(m.ID) != "1" || string(m.Query) != `{"from":"golden","n":[1,2]}` {
		t.Fatalf("%+v %v", m, err)
	}
	_, err = DecodeClient([]byte(`{"sys":5,"topic":1,"id":"x"}`), Limits{})
	var de *DecodeError
	if !errors.As(err, &de) || de.Code != CodeBadRequest || string(de.ID) != `"x"` {
		t.Fatalf("%v", err)
	}
	b := AppendFeed(nil, "sport", "a<b>", []byte(`{"x":1}`), UID{"ab", 3})
	if string(b) != `{"sys":8,"topic":"a<b>","msg":{"x":1},"channel":"sport","uid":"ab.3"}` {
		t.Fatal(string(b))
	}
	m, err = DecodeServer(b, Limits{})
	if err != nil || m.UID != "ab.3" || m.Topic != "a<b>" {
		t.Fatal(m, err)
	}
	b = AppendSyncReply(nil, nil, nil, nil)
	if string(b) != `{"sys":4,"result":{},"records":[]}` {
		t.Fatal(string(b))
	}
}
