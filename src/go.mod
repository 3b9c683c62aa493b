module github.com/afero/af-conn

go 1.25.0
