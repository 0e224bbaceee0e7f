package mgmt

import (
	"embed"
	"encoding/base64"
	"io/fs"
	"net/http"

	"github.com/warrenmq/warren/broker"
)

// The console is plain HTML, CSS and JavaScript compiled into the binary: no build step, no
// external assets.
//
//go:embed console
var consoleFiles embed.FS

func (s *Server) consoleRoutes(mux *http.ServeMux) {
	sub, _ := fs.Sub(consoleFiles, "console")
	static := http.StripPrefix("/console/", http.FileServer(http.FS(sub)))
	mux.Handle("GET /console/", static)
	mux.HandleFunc("GET /{$}", s.consolePage)
	mux.HandleFunc("POST /api/logout", func(w http.ResponseWriter, _ *http.Request) {
		http.SetCookie(w, &http.Cookie{Name: "warren_auth", Value: "", Path: "/", MaxAge: -1, HttpOnly: true, SameSite: http.SameSiteStrictMode})
		w.WriteHeader(http.StatusNoContent)
	})
}

// consolePage serves the console page; the page logs in through the API (its login form, or
// the credentials of a URL such as http://user:pass@host:15672/, which the document keeps).
// A client that sends valid HTTP basic credentials with the page request gets them as a
// session cookie, which the API accepts too.
func (s *Server) consolePage(w http.ResponseWriter, r *http.Request) {
	page, err := consoleFiles.ReadFile("console/index.html")
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:")
	cookie, _ := r.Cookie("warren_auth")
	if user, pass, ok := r.BasicAuth(); ok && s.validLogin(user, pass) {
		value := base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))
		if cookie == nil || cookie.Value != value {
			http.SetCookie(w, &http.Cookie{Name: "warren_auth", Value: value, Path: "/", HttpOnly: true, SameSite: http.SameSiteStrictMode})
		}
		_, _ = w.Write(page)
		return
	}
	_, _ = w.Write(page)
}

func (s *Server) validLogin(user, pass string) bool {
	hash, _, found := s.src.Node.FSM().User(user)
	return found && broker.CheckPassword(hash, pass)
}
