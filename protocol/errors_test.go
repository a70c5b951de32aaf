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
		{ErrBadFrame("m"), CodeBadFrame},
		{ErrUnknownSys("m"), CodeUnknownSys},
		{ErrBadRequest("m"), CodeBadRequest},
		{ErrMissingID("m"), CodeMissingID},
		{ErrNotRecoverable("m"), CodeNotRecoverable},
		{ErrInternal(), CodeInternal},
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
