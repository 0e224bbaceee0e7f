package mgmt

import "net/http"

func (s *Server) consoleRoutes(mux *http.ServeMux) {}
