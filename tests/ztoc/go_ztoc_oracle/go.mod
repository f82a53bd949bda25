module go_ztoc_oracle

go 1.19
