module go_json_oracle

go 1.19
