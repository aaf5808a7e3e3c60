"""kedge.edge"""
