package protocol

import "testing"

func TestNewErrorName(t *testing.T) {
	tests := map[string]string{
		CodeBadFrame:             "BadFrame",
		CodeUnknownSys:           "UnknownSys",
		CodeMissingID:            "MissingId",
		CodeTooManySubscriptions: "TooManySubscriptions",
		CodeInternal:             "Internal",
		"x":                      "X",
		"":                       "",
		"__a__b":                 "AB",
		"my_app.err9_x":          "MyApp.err9X",
	}
	for code, want := range tests {
		t.Run(code, func(t *testing.T) {
			e := NewError(code, "msg")
			if e.Name != want || e.Code != code || e.Message != "msg" {
				t.Fatalf("NewError(%q) = %+v, want name %q", code, e, want)
			}
		})
	}
}

func TestErrorHelpers(t *testing.T) {
	tests := []struct {
		e    *Error
		code string
	}{
		{NewError(CodeBadFrame, "m"), CodeBadFrame},
		{NewNotRecoverableError("m"), CodeNotRecoverable},
		{NewInternalError(), CodeInternal},
		{NewChannelBootedError("room"), CodeChannelBooted},
	}
	for _, tc := range tests {
		t.Run(tc.code, func(t *testing.T) {
			if tc.e.Code != tc.code || tc.e.Name != NameOf(tc.code) || tc.e.Message == "" {
				t.Fatalf("%+v", tc.e)
			}
			if got := tc.e.Error(); got != "sss: "+tc.code+": "+tc.e.Message {
				t.Fatalf("Error() = %q", got)
			}
		})
	}
}

// TestChannelBootedError: the one error object with a fourth key, the
// channel, which the encoders write and the decoders read back.
func TestChannelBootedError(t *testing.T) {
	e := NewChannelBootedError("room-1")
	if e.Channel != "room-1" || e.Code != CodeChannelBooted || e.Name != "ChannelBooted" {
		t.Fatalf("%+v", e)
	}
	frame := AppendErrorFrame(nil, e)
	want := `{"err":{"name":"ChannelBooted","message":"removed from channel room-1","code":"channel_booted","channel":"room-1"}}`
	if string(frame) != want {
		t.Fatalf("frame %s\nwant  %s", frame, want)
	}
	m, err := DecodeServer(frame, Limits{})
	if err != nil || m.Err == nil || *m.Err != *e {
		t.Fatalf("DecodeServer(%s) = %+v, %v", frame, m, err)
	}
	if other := AppendErrorFrame(nil, NewError(CodeBadFrame, "x")); string(other) != `{"err":{"name":"BadFrame","message":"x","code":"bad_frame"}}` {
		t.Fatalf("an error without a channel has three keys: %s", other)
	}
}
